"""The scaling results: ``scaling.json``, ``SCALING.md`` and the plots.

Each curve (``fanout``, ``ceiling``) is drawn as one PNG, clients on the x
axis and one line per system: throughput, p99 latency and the server's CPU
time per operation.  ``RESULTS.md``, the matrix's page, embeds the plots
and links the tables (``section``): the scaling run writes it again from
``results.json`` when that file is in the same directory.
"""

from __future__ import annotations

import json
import os
from typing import Any

from . import report

JSON = "scaling.json"
MARKDOWN = "SCALING.md"
#: Written by hand beside the results, linked from both pages.
NOTES = "SCALING_NOTES.md"
#: curve -> (file, x label, [(extras key or None for the value, y label)]).
PLOTS = {
    "fanout": (
        "scaling_fanout.png",
        "idle clients connected",
        [
            (None, "commits/s (one committer)"),
            ("p99_ms", "commit p99 (ms)"),
            ("server_cpu_per_commit_us", "server CPU per commit (µs)"),
            ("listener_cpu_per_invalidation_us", "listener CPU per invalidation (µs)"),
        ],
    ),
    "ceiling": (
        "scaling_ceiling.png",
        "cold reader processes",
        [
            (None, "aggregate loads/s"),
            ("p99_ms", "load p99 (ms)"),
            ("server_cpu_per_load_us", "server CPU per load (µs)"),
            ("ceiling_loads_per_s", "loads/s at a saturated server core"),
        ],
    ),
}
#: The extras shown in the tables, in order, with their headings.
COLUMNS = (
    ("p50_ms", "p50 ms"),
    ("p99_ms", "p99 ms"),
    ("server_cpu_per_commit_us", "server CPU/commit µs"),
    ("committer_cpu_per_commit_us", "committer CPU/commit µs"),
    ("listener_cpu_per_invalidation_us", "listener CPU/invalidation µs"),
    ("listener_cpu_per_commit_ms", "all listeners' CPU/commit ms"),
    ("caught_up_s", "until all caught up s"),
    ("server_cpu_per_load_us", "server CPU/load µs"),
    ("reader_cpu_per_load_us", "reader CPU/load µs"),
    ("server_core_share", "server core share"),
    ("ceiling_loads_per_s", "server-bound ceiling loads/s"),
    ("max_ms", "max ms"),
    ("after_return_p50_ms", "after the commit returned: p50 ms"),
    ("after_return_p99_ms", "p99 ms"),
    ("server_rss_MiB", "server VmRSS MiB"),
    ("cache_kept", "share of the cache kept"),
    ("cached_objects", "objects kept"),
    ("outage_commits", "commits while away"),
    ("peak_server_rss_MiB", "server peak VmRSS MiB"),
    ("idle_p50_ms", "commit p50 idle ms"),
    ("idle_p99_ms", "p99 idle ms"),
    ("pack_p50_ms", "p50 during the pack ms"),
    ("pack_p99_ms", "p99 during the pack ms"),
    ("p99_ratio_pack_idle", "p99 pack / idle"),
    ("commits_during_pack", "commits during the pack"),
)


def write(directory: str, results: dict[str, Any]) -> list[str]:
    """Write every file into ``directory``; the paths written."""
    written = []
    path = os.path.join(directory, JSON)
    report.write_json(path, results)
    written.append(path)
    for curve in PLOTS:
        path = plot(directory, results, curve)
        if path:
            written.append(path)
    path = os.path.join(directory, MARKDOWN)
    with open(path, "w") as file:
        file.write(markdown(results, directory))
    written.append(path)
    matrix = os.path.join(directory, "results.json")
    if os.path.exists(matrix):
        with open(matrix) as file:
            matrix_results = json.load(file)
        path = os.path.join(directory, "RESULTS.md")
        with open(path, "w") as file:
            file.write(report.markdown(matrix_results, directory))
        written.append(path)
    return written


def plot(directory: str, results: dict[str, Any], curve: str) -> str | None:
    """Draw ``curve`` into its PNG; None when the run has no point of it."""
    points = [w for w in results["workloads"] if w.get("curve") == curve]
    if not points:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    name, x_label, panels = PLOTS[curve]
    points.sort(key=lambda w: w["x"])
    figure, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6))
    for axis, (key, y_label) in zip(axes, panels, strict=True):
        for system in results["systems"]:
            xs, ys = [], []
            for workload in points:
                entry = workload["results"].get(system["key"])
                if entry is None:
                    continue
                value = entry["median"] if key is None else entry["extras"].get(key)
                if value is not None:
                    xs.append(workload["x"])
                    ys.append(value)
            axis.plot(xs, ys, marker="o", label=system["label"])
        axis.set_xlabel(x_label)
        axis.set_ylabel(y_label)
        axis.set_ylim(bottom=0)
        axis.grid(alpha=0.3)
    axes[0].legend()
    machine = results["machine"]
    figure.suptitle(
        f"{curve}: medians of {results['options']['runs']} run(s); "
        f"{machine['cores']} cores, load average "
        f"{_loads(machine['load_average_at_start'])} at start",
        fontsize=10,
    )
    figure.tight_layout()
    path = os.path.join(directory, name)
    figure.savefig(path, dpi=80)
    plt.close(figure)
    return path


def markdown(results: dict[str, Any], directory: str) -> str:
    systems = results["systems"]
    base, ours = systems[0], systems[1]
    lines = [
        "# How the cost grows: ZEO 6 against zodbserver",
        "",
        f"Command: `{results['command']}`; {results['options']['runs']} run(s) "
        "per cell, alternating between the systems; medians.  Ratio = ours / "
        f"{base['label']} (above 1 is better for `higher` rows, below 1 for "
        "`lower` rows).  CPU times are read from `/proc` (every thread of the "
        "process) around each measurement.",
        "",
    ]
    for curve, (name, _, _) in PLOTS.items():
        if os.path.exists(os.path.join(directory, name)):
            lines += [f"![{curve}]({name})", ""]
    if os.path.exists(os.path.join(directory, NOTES)):
        lines += [
            f"What the figures say, and what bounds the targets not met: "
            f"[{NOTES}]({NOTES}).",
            "",
        ]
    lines += targets(results)
    old = next((s for s in systems if s["key"] == "ours-old"), None)
    lines += [
        "| workload | better | unit | "
        + " | ".join(s["label"] for s in systems)
        + " | ratio | paired ratio |"
        + (" ours / ours-old (paired) |" if old else ""),
        "|---|---|---|" + "---|" * len(systems) + "---|---|" + ("---|" if old else ""),
    ]
    for workload in results["workloads"]:
        entries = [workload["results"].get(s["key"], {}) for s in systems]
        cells = [_number(entry.get("median")) for entry in entries]
        mine = workload["results"][ours["key"]]
        row = (
            f"| {workload['name']} | {workload['better']} | {workload['unit']} | "
            + " | ".join(cells)
            + f" | {_ratio(mine.get('ratio'))} | {_ratio(mine.get('paired_ratio'))} |"
        )
        if old:
            before = workload["results"].get(old["key"])
            row += (
                f" {_ratio(report.paired_ratio(mine['runs'], before['runs']))} |"
                if before
                else " - |"
            )
        lines.append(row)
    lines += ["", "## Details", ""]
    for workload in results["workloads"]:
        measured = [s for s in systems if s["key"] in workload["results"]]
        shown = [
            (key, title)
            for key, title in COLUMNS
            if any(key in workload["results"][s["key"]]["extras"] for s in measured)
        ]
        lines += [
            f"### {workload['name']}: {workload['description']}",
            "",
            "| system | "
            + workload["unit"]
            + " | "
            + " | ".join(title for _, title in shown)
            + " |",
            "|---|---|" + "---|" * len(shown),
        ]
        for system in measured:
            entry = workload["results"][system["key"]]
            cells = [_number(entry["extras"].get(key)) for key, _ in shown]
            lines.append(
                f"| {system['label']} | {_number(entry['median'])} | "
                + " | ".join(cells)
                + " |"
            )
        pairs = [(ours, base)]
        if old and old["key"] in workload["results"]:
            pairs.append((ours, old))
        for mine, other in pairs if shown else []:
            lines.append(_ratio_row(workload, mine, other, shown))
        lines.append("")
    failures = [
        (workload["name"], key, error)
        for workload in results["workloads"]
        for key, entry in workload["results"].items()
        for error in entry["errors"]
    ]
    if failures:
        lines += ["## Failed measurements", ""]
        lines += [f"- `{n}` × `{k}`: {report._last_line(e)}" for n, k, e in failures]
        lines.append("")
    info = results["machine"]
    lines += [
        "## Machine",
        "",
        f"- CPU: {info['cpu_model']}, {info['cores']} cores; RAM {info['ram_gib']} GiB",
        f"- {info['os']}; {info['python']}",
        "- packages: "
        + ", ".join(f"{n} {v or 'absent'}" for n, v in info["packages"].items()),
        f"- load average at start {_loads(info['load_average_at_start'])}, at end "
        f"{_loads(info.get('load_average_at_end'))}",
        f"- total time: {results['elapsed_s']:.0f} s",
        "",
    ]
    return "\n".join(lines)


#: (what, workload, extras key or None for the value, target, ``ratio``
#: to compare ours / ZEO's with it, or ``value`` to compare ours' own
#: figure; "le" or "ge").
TARGETS = (
    (
        "a listener's CPU per invalidation, 256 clients",
        "fanout_256",
        "listener_cpu_per_invalidation_us",
        0.5,
        "ratio",
        "le",
    ),
    (
        "the server's CPU per commit, 256 clients",
        "fanout_256",
        "server_cpu_per_commit_us",
        1.0,
        "ratio",
        "le",
    ),
    ("aggregate cold loads/s, 8 readers", "ceiling_8", None, 2.0, "ratio", "ge"),
    ("one-object commit p50 (ms)", "fanout_0", "p50_ms", 1.0, "value", "le"),
    (
        "invalidation delay p99 after the commit returned, busy receiver",
        "delay_busy",
        "after_return_p99_ms",
        1.0,
        "ratio",
        "le",
    ),
    (
        "long-outage reconnect: until the first load",
        "big_reconnect_long",
        None,
        1.0,
        "ratio",
        "le",
    ),
    (
        "commit p99 during a pack / idle",
        "big_pack",
        "p99_ratio_pack_idle",
        3.0,
        "value",
        "le",
    ),
)


def targets(results: dict[str, Any]) -> list[str]:
    """The targets table: each figure of ours, ZEO's, the floor's where it
    was measured, and whether ours meets the target."""
    rows = {w["name"]: w["results"] for w in results["workloads"]}
    base, ours = (s["key"] for s in results["systems"][:2])
    lines = [
        "## Targets",
        "",
        "| figure | ZEO 6 | zodbserver | floor | compared | target | met |",
        "|---|---|---|---|---|---|---|",
    ]
    for what, name, key, goal, kind, sense in TARGETS:
        found = rows.get(name)
        if not found or ours not in found or base not in found:
            continue

        mine, theirs, floor = (
            _figure(found, system, key) for system in (ours, base, "floor")
        )
        if mine is None or theirs is None:
            continue
        compared = mine / theirs if kind == "ratio" and theirs else mine
        met = compared <= goal if sense == "le" else compared >= goal
        lines.append(
            f"| {what} | {_number(theirs)} | {_number(mine)} | {_number(floor)} "
            f"| {'ours / ZEO ' if kind == 'ratio' else ''}{compared:.2f} "
            f"| {'≤' if sense == 'le' else '≥'} {goal:g} | {'yes' if met else 'no'} |"
        )
    lines.append("")
    return lines if len(lines) > 5 else []


def _figure(found: dict[str, Any], system: str, key: str | None) -> float | None:
    """``system``'s median (``key`` None) or median extra ``key``."""
    entry = found.get(system)
    if entry is None:
        return None
    value = entry["median"] if key is None else entry["extras"].get(key)
    return value if isinstance(value, float | int) else None


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.scaling_report DIR``: write the pages and plots of
    ``DIR/scaling.json`` again."""
    import sys

    directory = (sys.argv[1:] if argv is None else argv)[0]
    with open(os.path.join(directory, JSON)) as file:
        results = json.load(file)
    for path in write(directory, results):
        print(path)
    return 0


def _ratio_row(
    workload: dict[str, Any],
    mine: dict[str, Any],
    other: dict[str, Any],
    shown: list[tuple[str, str]],
) -> str:
    """The row of ``mine``'s medians over ``other``'s, value and extras."""
    results = workload["results"]
    ours, theirs = results[mine["key"]], results[other["key"]]
    ratios = [
        _ratio(ours["extras"][key] / theirs["extras"][key])
        if theirs["extras"].get(key) and key in ours["extras"]
        else "-"
        for key, _ in shown
    ]
    value = (
        ours["median"] / theirs["median"]
        if ours["median"] is not None and theirs["median"]
        else None
    )
    return (
        f"| ratio {mine['label']} / {other['label']} | {_ratio(value)} | "
        + " | ".join(ratios)
        + " |"
    )


def section(directory: str | None) -> list[str]:
    """``RESULTS.md``'s lines about the scaling run in ``directory``, if any."""
    if directory is None or not os.path.exists(os.path.join(directory, JSON)):
        return []
    with open(os.path.join(directory, JSON)) as file:
        results = json.load(file)
    lines = [
        "## As the work grows",
        "",
        f"From `{results['command']}` (tables in [{MARKDOWN}]({MARKDOWN})): "
        "ZEO 6 and ours, side by side in one run.",
        "",
    ]
    if os.path.exists(os.path.join(directory, NOTES)):
        lines += [f"What the figures say: [{NOTES}]({NOTES}).", ""]
    for curve, (name, _, _) in PLOTS.items():
        if os.path.exists(os.path.join(directory, name)):
            lines += [f"![{curve}]({name})", ""]
    return lines


def _number(value: float | None) -> str:
    if value is None:
        return "-"
    return report._number(value)


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _loads(loads: Any) -> str:
    return report._loads(loads)


if __name__ == "__main__":
    raise SystemExit(main())
