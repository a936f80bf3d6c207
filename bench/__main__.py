"""``python -m bench``: run the benchmark suite (``bench.run.main``)."""

from .run import main

raise SystemExit(main())
