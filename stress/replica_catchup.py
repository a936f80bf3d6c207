"""A replica catching up on a large database: rate and memory.

::

    .venv/bin/python -m stress.replica_catchup [--transactions 100000]
        [--directory DIR] [--output stress/results/replica_catchup.md]

The machinery is ``tests/support/catchup.py`` (short in
``tests/e2e/test_replica_catchup.py``): a primary process serves a
FileStorage of ``--transactions`` commits (a blob in every hundredth); a
replica process starts from an empty storage, is SIGKILLed part-way through
and restarted, catches up, and is killed and restarted again while it
follows a writer.  The report gives the catch-up rate after the restart
(transactions/s, MB/s of Data.fs), the peak resident memory of both
processes, and whether the two files then hold the same transactions; the
exit status is 1 if they do not.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for _path in (ROOT, ROOT / "tests"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))


from stress.torture import machine_details  # noqa: E402
from support.catchup import run_catchup  # noqa: E402
from support.replicas import same_files  # noqa: E402

DEFAULT_OUTPUT = ROOT / "stress" / "results" / "replica_catchup.md"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stress.replica_catchup")
    parser.add_argument("--transactions", type=int, default=100_000)
    parser.add_argument("--directory", type=Path, default=None)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    options = parser.parse_args(argv)
    directory = options.directory or Path(tempfile.mkdtemp(prefix="catchup-"))
    result = run_catchup(directory, options.transactions)
    differences = same_files(directory / "primary", directory / "replica")
    details = machine_details(directory)
    # The kill came part-way: the restarted replica had the rest to do.
    rate = result.applied / result.seconds
    share = result.applied / result.transactions
    primary_mb = result.primary_peak_kb / 1024
    replica_mb = result.replica_peak_kb / 1024
    text = "\n".join(
        [
            "# A replica catching up",
            "",
            f"{result.transactions} transactions ({result.data_bytes / 2**20:.0f} MB "
            "Data.fs, a blob in every hundredth) from an empty replica, "
            f"SIGKILLed {result.kills} times (part-way through, and while "
            "following a writer).",
            "",
            "| | |",
            "|---|---|",
            f"| catch-up after the first restart | {result.applied} transactions "
            f"in {result.seconds:.1f} s: {rate:.0f} transactions/s, "
            f"{share * result.data_bytes / 2**20 / result.seconds:.1f} MB/s |",
            f"| peak resident memory, primary | {primary_mb:.0f} MB |",
            f"| peak resident memory, replica | {replica_mb:.0f} MB |",
            f"| the two files afterwards | "
            f"{'identical' if not differences else differences[:3]} |",
            "",
            f"Machine: {details['cpu_model']}, {details['affinity']} CPUs, "
            f"{details['ram_gib']} GiB; data on {details['filesystem']}; load "
            f"average at the end {' / '.join(f'{x:.2f}' for x in os.getloadavg())}.",
            "",
        ]
    )
    print(text)
    options.output.parent.mkdir(parents=True, exist_ok=True)
    options.output.write_text(text)
    shutil.rmtree(directory, ignore_errors=True)
    return 1 if differences else 0


if __name__ == "__main__":
    sys.exit(main())
