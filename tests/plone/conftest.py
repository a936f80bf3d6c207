"""The recipe tests' fixtures, for the Plone deployment."""

from recipes.conftest import pids

__all__ = ["pids"]
