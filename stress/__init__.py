"""Stress measurements of zodbserver against ZEO 6, run as modules:
``python -m stress.<name>``."""
