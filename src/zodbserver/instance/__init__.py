"""Client instances: WSGI application servers that are database clients.

The role of the "Zope instance" in a classic ZEO deployment: each instance
opens the database through ``zodbserver.ClientStorage`` and serves HTTP.
``wsgi`` holds the per-request transaction middleware and the app factory
(usable from any WSGI server); ``demo`` a small key/value application;
``main`` the ``bin/<instance>`` control command (fg, start, stop, status).
"""

from .wsgi import TransactionMiddleware, make_app

__all__ = ["TransactionMiddleware", "make_app"]
