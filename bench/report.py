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

A run with ``--monitor`` also has, for each monitored twin, its ratio to
the same system without the monitor (``on_off_ratio``, of the medians, and
``on_off_paired_ratio``, round by round), the scrapes that fell within each
of its measurements, the server's CPU time per operation on / off
(``server_cpu_on_off_paired_ratio``), and a summary of every scrape
(``results["monitor"]``); ``RESULTS.md`` then opens with a "Monitor on /
off" table.
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
        for key in ("scrapes", "measured_s", "server_cpu_s", "server_cpu_per_op"):
            if any(key in m for m in measurements):
                summary[system][key] = [m.get(key) for m in measurements]
    base = summary.get(baseline, {}).get("median")
    base_runs = summary.get(baseline, {}).get("runs", [])
    for entry in summary.values():
        median = entry["median"]
        entry["ratio"] = median / base if median is not None and base else None
        entry["paired_ratio"] = paired_ratio(entry["runs"], base_runs)
    return summary


def add_monitor_ratios(
    summary: dict[str, dict[str, Any]], pairs: dict[str, str]
) -> None:
    """Give each monitored system (a key of ``pairs``) its ratios to the same
    system without the monitor (``pairs[key]``)."""
    for key, off_key in pairs.items():
        on, off = summary[key], summary[off_key]
        on["monitor_off"] = off_key
        on["on_off_ratio"] = (
            on["median"] / off["median"]
            if on["median"] is not None and off["median"]
            else None
        )
        on["on_off_paired_ratio"] = paired_ratio(on["runs"], off["runs"])
        on["server_cpu_on_off_paired_ratio"] = paired_ratio(
            on.get("server_cpu_per_op", []), off.get("server_cpu_per_op", [])
        )


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


def markdown(results: dict[str, Any], directory: str | None = None) -> str:
    """The page; with ``directory``, the scaling plots found there are
    embedded (``scaling_report.section``)."""
    from . import scaling_report

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
    ]
    if results.get("monitor"):
        lines += _monitor_section(results)
    lines += [
        f"## Ratios to {_label(systems, baseline)}",
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
    lines += ["", *scaling_report.section(directory)]
    lines += ["## Machine", ""]
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


def _monitor_section(results: dict[str, Any]) -> list[str]:
    """The monitored twins against the same systems without the monitor."""
    monitor = results["monitor"]
    systems = results["systems"]
    interval = monitor["interval_s"]
    failed = monitor["failed"]
    lines = [
        "## Monitor on / off",
        "",
        "Each *monitor on* system is the same client against a second server "
        "of ours, on its own copy of the same data, whose `monitor-address` "
        f"is set; a separate process GETs its `/metrics` and then its "
        f"`/status.json` as each of that server's measurements begins and "
        f"then every {interval:g} s until it ends (Prometheus's default "
        "interval is 15 s, so the cost is an upper bound), and scrapes "
        "nothing while the other systems are measured.  "
        f"{monitor['scrapes']} scrapes, "
        + (f"**{failed} failed**" if failed else "none failed")
        + f"; a scrape took {_ms_text(monitor['metrics_ms_p50'])} for "
        f"`/metrics` ({_kib(monitor['metrics_bytes'])}) and "
        f"{_ms_text(monitor['status_ms_p50'])} for `/status.json` "
        f"({_kib(monitor['status_bytes'])}), medians (slowest "
        f"{_ms_text(monitor['metrics_ms_max'])} and "
        f"{_ms_text(monitor['status_ms_max'])}).  Rounds alternate in "
        "direction (off then on, on then off).",
        "",
        "Ratio = monitor on / monitor off: the ratio of the medians, and the "
        "paired ratio (the median of each round's ratio, the steadier "
        "figure).  Cost = the throughput lost (`higher` rows) or the time "
        "added (`lower` rows) by the monitor, from the paired ratio; "
        "a negative cost is the monitored server doing better, i.e. noise.  "
        "Server CPU = the CPU time the server spent per operation (per "
        "commit, per call; per measurement for a workload that does not "
        "count them), off and on (medians), and the paired on / off ratio; "
        "it includes the scrapes that fell within the measurement.  "
        "Scrapes = how many scrapes overlapped each monitored measurement, "
        "their total, and the seconds of monitored measurement per scrape.",
        "",
        "| workload | better | system | off | on | on / off | paired on / off "
        "| cost | server CPU off, on | paired on / off | scrapes per run |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for workload in results["workloads"]:
        for system in systems:
            off_key = system.get("monitor_of")
            if off_key is None:
                continue
            on = workload["results"][system["key"]]
            off = workload["results"][off_key]
            paired = on.get("on_off_paired_ratio")
            cost = None
            if paired is not None:
                cost = (1 - paired) if workload["better"] == "higher" else paired - 1
            scrapes = [n for n in on.get("scrapes", []) if n is not None]
            measured = sum(t for t in on.get("measured_s", []) if t is not None)
            every = f"; one per {measured / sum(scrapes):.2f} s" if sum(scrapes) else ""
            cells = [
                workload["name"],
                workload["better"],
                _label(systems, off_key),
                f"{_number(off['median'])} {workload['unit']}",
                f"{_number(on['median'])} {workload['unit']}",
                _ratio3(on.get("on_off_ratio")),
                _ratio3(paired),
                "failed" if cost is None else f"{cost * 100:+.1f}%",
                f"{_cpu(off.get('server_cpu_per_op'))}, "
                f"{_cpu(on.get('server_cpu_per_op'))}",
                _ratio3(on.get("server_cpu_on_off_paired_ratio")),
                " ".join(str(n) for n in scrapes) + f" (total {sum(scrapes)}{every})",
            ]
            lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    return lines


def _cpu(runs: list[float | None] | None) -> str:
    """The median CPU time of ``runs`` (seconds), in µs or ms."""
    values = [value for value in runs or [] if value is not None]
    if not values:
        return "?"
    seconds = statistics.median(values)
    if seconds < 0.01:
        return f"{seconds * 1e6:.1f} µs"
    return f"{seconds * 1e3:.1f} ms"


def _ratio3(ratio: float | None) -> str:
    return "failed" if ratio is None else f"{ratio:.3f}"


def _ms_text(value: float | None) -> str:
    return "?" if value is None else f"{value:.2f} ms"


def _kib(value: float | None) -> str:
    return "?" if value is None else f"{value / 1024:.1f} KiB"


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
