"""Benchmarks of zodbserver against ZEO 6: ``python -m bench`` (see README.md).

``run`` parses the command line and drives the matrix; ``systems`` opens a
client of each kind; ``processes`` starts and always reaps the child
processes (the two servers and the commit/hold workers in ``worker``);
``data`` builds the seed database; ``workloads`` measures; ``report``
writes the JSON and Markdown files.
"""
