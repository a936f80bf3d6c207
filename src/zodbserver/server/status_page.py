"""The monitor's ``/`` page: the server's state for a person to read.

Plain HTML rendered from a snapshot, refreshing itself every few seconds:
each storage with its size, last transaction and counters; who holds the
commit lock, for how long, and who queues behind it; every connected
client; the slowest recent commits.  Everything interpolated is escaped.
"""

from __future__ import annotations

import html
import time
from collections.abc import Iterable, Mapping
from typing import Any

from .figures import age, clock, duration, replication, since, size
from .snapshot import ServerSnapshot, StorageSnapshot

#: Seconds between the page's own reloads.
REFRESH = 5

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.2em; margin-top: 1.5em; }
h3 { font-size: 1em; }
table { border-collapse: collapse; margin: 0.5em 0 1em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }
th { background: #f3f3f3; } td.n { text-align: right; }
.lock { padding: 0.4em 0.6em; background: #fff4d6; display: inline-block; }
.free { background: #e8f5e9; }
"""


def render(
    snapshot: ServerSnapshot | None,
    blob_sizes: Mapping[str, int],
    *,
    state: str,
) -> str:
    now = time.time()
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="refresh" content="{REFRESH}">',
        "<title>zodbserver status</title>",
        f"<style>{STYLE}</style></head><body>",
        "<h1>zodbserver</h1>",
    ]
    if snapshot is None:
        parts.append(f"<p>The server is {_e(state)}: no storages are served.</p>")
    else:
        parts.append(
            f"<p>Process {snapshot['pid']}, {_e(state)}; "
            f"as of {_e(clock(snapshot['taken_at']))}.</p>"
        )
        for storage in snapshot["storages"]:
            parts.extend(_storage(storage, blob_sizes, now))
    parts.append("</body></html>")
    return "\n".join(parts)


def _storage(
    storage: StorageSnapshot, blob_sizes: Mapping[str, int], now: float
) -> Iterable[str]:
    yield f"<h2>Storage {_e(storage['name'])}</h2>"
    last_time = storage["last_transaction_time"]
    last = (
        "none yet"
        if last_time is None
        else f"{storage['last_transaction']} at {clock(last_time)} "
        f"({age(now - last_time)} ago)"
    )
    blobs = storage["blob_directory"]
    rows: list[tuple[str, Any]] = [
        ("Size", size(storage["size"])),
        ("Objects", storage["objects"]),
        ("Last transaction", last),
        ("Connected clients", storage["connections"]),
        ("Open transactions", storage["active_transactions"]),
        ("Invalidation queue", storage["invalidation_queue"]),
        ("Serving since", storage["started"]),
    ]
    if blobs is not None:
        measured = blob_sizes.get(blobs)
        shown = "…" if measured is None else size(measured)
        rows.append(("Blobs", f"{blobs} ({shown})"))
    rows.extend(
        (name.replace("_", " ").capitalize(), n)
        for name, n in storage["counters"].items()
    )
    yield _table(("", ""), rows, header=False)
    yield (
        '<p class="replication">Replication: '
        + "; ".join(_e(line) for line in replication(storage["replication"]))
        + "</p>"
    )

    lock = storage["lock"]
    if lock["holder"] is None:
        yield '<p class="lock free">The commit lock is free.</p>'
    else:
        held = lock["held_for"] or 0.0
        yield (
            f'<p class="lock">The commit lock is held by {_e(lock["holder"])} '
            f"for {age(held)}.</p>"
        )
    if lock["queue"]:
        yield (
            "<p>Waiting for the lock, in order: "
            + ", ".join(_e(label) for label in lock["queue"])
            + "</p>"
        )

    yield f"<h3>Clients ({len(storage['clients'])})</h3>"
    yield _table(
        (
            "Client",
            "Identity",
            "Access",
            "Connected",
            "Loads",
            "Commits",
            "Transaction",
        ),
        [
            (
                client["label"],
                client["identity"] or "",
                client["access"] + (", read-only" if client["read_only"] else ""),
                since(client["connected_at"], now),
                client["loads"],
                client["commits"],
                _transaction(client),
            )
            for client in storage["clients"]
        ],
    )
    slowest = storage["slowest_commits"]
    yield "<h3>Slowest recent commits</h3>"
    yield _table(
        ("Finished", "Client", "Objects", "Bytes", "Held", "Waited", "Vote", "Finish"),
        [
            (
                clock(entry["finished_at"]),
                entry["client"],
                entry["objects"],
                entry["bytes"],
                duration(entry["hold"]),
                duration(entry["wait"]),
                duration(entry["vote"]),
                duration(entry["finish"]),
            )
            for entry in slowest
        ],
    )


def _transaction(client: Mapping[str, Any]) -> str:
    if client["holds_lock"]:
        return f"{client['transaction']}, holds the commit lock"
    if client["waiting_for_lock"]:
        return "waiting for the commit lock"
    return client["transaction"] or ""


def _table(
    headings: tuple[str, ...], rows: Iterable[tuple[Any, ...]], *, header: bool = True
) -> str:
    lines = ["<table>"]
    if header:
        lines.append("<tr>" + "".join(f"<th>{_e(h)}</th>" for h in headings) + "</tr>")
    count = 0
    for row in rows:
        count += 1
        cells = []
        for index, value in enumerate(row):
            numeric = isinstance(value, int | float)
            tag = "th" if not header and index == 0 else "td"
            css = ' class="n"' if numeric else ""
            cells.append(f"<{tag}{css}>{_e(value)}</{tag}>")
        lines.append("<tr>" + "".join(cells) + "</tr>")
    if not count:
        lines.append(f'<tr><td colspan="{len(headings)}">none</td></tr>')
    lines.append("</table>")
    return "\n".join(lines)


def _e(value: object) -> str:
    return html.escape(str(value))
