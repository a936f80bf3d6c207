"""Helpers shared by the test directories (on ``sys.path`` through the
``pythonpath`` setting in pyproject.toml)."""
