"""Running ``unittest`` suites (ZODB's doctest suites) inside pytest tests.

pytest does not collect the doctest suites ZODB builds, so a test runs a
whole suite and fails with its report.
"""

from __future__ import annotations

import gc
import io
import unittest
import warnings


def select(suite: unittest.TestSuite, name: str, keep: bool) -> unittest.TestSuite:
    """The tests of ``suite``, flattened: those of the doctest file ``name``
    (``keep``), or all the others."""
    tests: list[unittest.TestCase] = []

    def walk(tests_of: unittest.TestSuite) -> None:
        for test in tests_of:
            if isinstance(test, unittest.TestSuite):
                walk(test)
            elif str(test).endswith(name) == keep:
                tests.append(test)

    walk(suite)
    return unittest.TestSuite(tests)


def run_suite(suite: unittest.TestSuite) -> str | None:
    """Run ``suite``; its report if it failed or ran nothing, else None."""
    report = io.StringIO()
    with warnings.catch_warnings():
        # blob_transaction.txt itself leaves a file open; collect it here.
        warnings.simplefilter("ignore", ResourceWarning)
        result = unittest.TextTestRunner(stream=report, verbosity=1).run(suite)
        gc.collect()
    if result.testsRun == 0 or not result.wasSuccessful():
        return f"{result.testsRun} tests run\n{report.getvalue()}"
    return None
