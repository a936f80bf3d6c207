"""Coverage-guided fuzzing (atheris) of the protocol decoder and the
server's argument checks::

    .venv/bin/python -m stress.fuzz_atheris [-max_total_time=600] [CORPUS ...]

``zodbserver`` is instrumented (``atheris.instrument_imports``) before
anything else imports it, so libFuzzer's coverage feedback sees the framing,
codecs, connection state machines and ``server/methods.py``.  The targets
are ``stress/fuzz_targets.py``'s: the first input byte picks one (0-4 the
decoder's, 5 and 6 the argument checks'); an exception escaping one is a
crash, and libFuzzer keeps the input (``-artifact_prefix`` says where).

Without a corpus directory, a seed corpus of valid inputs is written to a
temporary one; an empty corpus directory is seeded the same way.  Other
arguments are libFuzzer's (``-runs=N`` stops after N inputs).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["zodbserver"]):
    from stress import fuzz_targets


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv if argv is None else argv)
    corpora = [Path(arg) for arg in argv[1:] if not arg.startswith("-")]
    if not corpora:
        corpus = Path(tempfile.mkdtemp(prefix="zodbserver-atheris-"))
        argv.append(str(corpus))
        corpora = [corpus]
    if corpora[0].is_dir() and not any(corpora[0].iterdir()):
        fuzz_targets.seed_corpus(corpora[0])
        print(f"seed corpus written to {corpora[0]}", file=sys.stderr)
    atheris.Setup(argv, fuzz_targets.fuzz_one_input)
    try:
        atheris.Fuzz()
    finally:
        skipped = fuzz_targets.SKIPPED["memo"]
        print(f"skipped pickles with memo bombs: {skipped}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
