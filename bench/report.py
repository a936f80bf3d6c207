"""The results: machine details, the JSON file and the Markdown table.

``results.json`` holds every run's value, the median, and the ratio of the
median to the baseline system's (ZEO client × ZEO server) for every
workload; ``RESULTS.md`` shows the same as tables.  A ratio is always
``value / baseline value``: whether that is good depends on the unit, so
every row says which direction is better.

Each round runs every system once, one after the other, so the *paired
ratio* -- the median over rounds of that round's value over the baseline's
-- compares measurements taken minutes apart at most.  On a shared machine
whose speed drifts between rounds it is the steadier of the two figures.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
from importlib import metadata
from typing import Any

PACKAGES = ("ZODB", "ZEO", "zodbserver", "msgpack", "persistent", "uvloop")


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "cpu_model": _cpuinfo("model name") or platform.processor() or "unknown",
        "cores": os.cpu_count(),
        "ram_gib": round(_meminfo_kib("MemTotal") / 1024 / 1024, 1),
        "os": f"{platform.system()} {platform.release()}",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "packages": {name: _version(name) for name in PACKAGES},
        "load_average_at_start": os.getloadavg(),
    }
    return info


def _cpuinfo(key: str) -> str | None:
    try:
        with open("/proc/cpuinfo") as file:
            for line in file:
                name, _, value = line.partition(":")
                if name.strip() == key:
                    return value.strip()
    except OSError:
        pass
    return None


def _meminfo_kib(key: str) -> int:
    try:
        with open("/proc/meminfo") as file:
            for line in file:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def summarize(
    runs: dict[str, list[dict[str, Any]]], baseline: str
) -> dict[str, dict[str, Any]]:
    """Per system: the runs, the median value and extras, and the ratio."""
    summary: dict[str, dict[str, Any]] = {}
    for system, measurements in runs.items():
        values = [m["value"] for m in measurements if m.get("value") is not None]
        errors = [m["error"] for m in measurements if m.get("error")]
        extras: dict[str, float] = {}
        for key in {key for m in measurements for key in m.get("extras", {})}:
            found = [m["extras"][key] for m in measurements if key in m["extras"]]
            extras[key] = statistics.median(found)
        summary[system] = {
            "median": statistics.median(values) if values else None,
            "runs": [m.get("value") for m in measurements],
            "extras": extras,
            "errors": errors,
        }
    base = summary.get(baseline, {}).get("median")
    base_runs = summary.get(baseline, {}).get("runs", [])
    for entry in summary.values():
        median = entry["median"]
        entry["ratio"] = median / base if median is not None and base else None
        entry["paired_ratio"] = paired_ratio(entry["runs"], base_runs)
    return summary


def paired_ratio(
    runs: list[float | None], baseline_runs: list[float | None]
) -> float | None:
    """The median over rounds of ``run / baseline run``, skipping rounds in
    which either failed."""
    ratios = [
        value / base
        for value, base in zip(runs, baseline_runs, strict=False)
        if value is not None and base
    ]
    return statistics.median(ratios) if ratios else None


def write_json(path: str, results: dict[str, Any]) -> None:
    with open(path, "w") as file:
        json.dump(results, file, indent=2)
        file.write("\n")


def _number(value: float | None) -> str:
    if value is None:
        return "failed"
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def markdown(results: dict[str, Any]) -> str:
    systems = results["systems"]
    baseline = results["baseline"]
    lines = [
        "# zodbserver vs ZEO 6: benchmark results",
        "",
        f"Command: `{results['command']}`; {results['options']['runs']} run(s) "
        "per cell, alternating between systems; the median is shown.",
        f"Ratio = value / value of **{_label(systems, baseline)}** "
        "(below 1 is better for `lower` rows, above 1 for `higher` rows).",
        "",
        "## Ratios to ZEO client × ZEO server",
        "",
        "| workload | better | " + " | ".join(s["label"] for s in systems) + " |",
        "|---|---|" + "---|" * len(systems),
    ]
    lines += _ratio_rows(results, "ratio")
    lines += [
        "",
        "## Paired ratios",
        "",
        "The median over rounds of each round's ratio (every round runs every "
        "system once, back to back).",
        "",
        "| workload | better | " + " | ".join(s["label"] for s in systems) + " |",
        "|---|---|" + "---|" * len(systems),
    ]
    lines += _ratio_rows(results, "paired_ratio")
    lines += [
        "",
        "## Values",
        "",
        "| workload | unit | " + " | ".join(s["label"] for s in systems) + " |",
        "|---|---|" + "---|" * len(systems),
    ]
    for workload in results["workloads"]:
        cells = [_cell(workload["results"][system["key"]]) for system in systems]
        lines.append(
            f"| {workload['name']} | {workload['unit']} | " + " | ".join(cells) + " |"
        )
    lines += ["", "Workloads:", ""]
    for workload in results["workloads"]:
        lines.append(f"- `{workload['name']}`: {workload['description']}")
    failures = [
        (workload["name"], key, error)
        for workload in results["workloads"]
        for key, entry in workload["results"].items()
        for error in entry["errors"]
    ]
    if failures:
        lines += ["", "## Failed measurements", ""]
        for name, key, error in failures:
            lines.append(f"- `{name}` × `{key}`: {_last_line(error)}")
    if results["skipped"]:
        lines += ["", "Not run: " + ", ".join(f"`{n}`" for n in results["skipped"])]
    lines += ["", "## Machine", ""]
    info = results["machine"]
    packages = ", ".join(
        f"{name} {version or 'absent'}" for name, version in info["packages"].items()
    )
    lines += [
        f"- CPU: {info['cpu_model']}, {info['cores']} cores; RAM {info['ram_gib']} GiB",
        f"- {info['os']}; {info['python']}",
        f"- packages: {packages}",
        f"- wire encoding: {results['encodings']}",
        f"- transport: {'TLS (mutual)' if results['options'].get('tls') else 'TCP'}",
        f"- load average at start {_loads(info['load_average_at_start'])}, at end "
        f"{_loads(info.get('load_average_at_end'))}",
        f"- total time: {results['elapsed_s']:.0f} s",
        "",
    ]
    return "\n".join(lines)


def _ratio_rows(results: dict[str, Any], key: str) -> list[str]:
    rows = []
    for workload in results["workloads"]:
        cells = []
        for system in results["systems"]:
            ratio = workload["results"][system["key"]].get(key)
            cells.append("failed" if ratio is None else f"{ratio:.2f}")
        rows.append(
            f"| {workload['name']} | {workload['better']} | " + " | ".join(cells) + " |"
        )
    return rows


def _cell(entry: dict[str, Any]) -> str:
    text = _number(entry["median"])
    extras = entry["extras"]
    if "p50_ms" in extras:
        text += (
            f" (p50 {_number(extras['p50_ms'])} ms, p99 {_number(extras['p99_ms'])} ms)"
        )
    if "MB_per_s" in extras:
        text += f" ({_number(extras['MB_per_s'])} MB/s)"
    if "before_clients_MiB" in extras:
        text += f" (idle {_number(extras['before_clients_MiB'])})"
    return text


def _label(systems: list[dict[str, Any]], key: str) -> str:
    return next(s["label"] for s in systems if s["key"] == key)


def _loads(loads: Any) -> str:
    if not loads:
        return "?"
    return " ".join(f"{load:.2f}" for load in loads)


def _last_line(error: str) -> str:
    """The exception at the bottom of a child's traceback, or the error itself."""
    text = error.replace("\\n", "\n")
    lines = [line.strip().rstrip("')").strip() for line in text.splitlines()]
    lines = [line for line in lines if line]
    return (lines[-1] if lines else error)[:300]
