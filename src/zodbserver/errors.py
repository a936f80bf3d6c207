"""The exceptions zodbserver raises.

Everything the package raises on its own account derives from
``ZodbServerError``.  Protocol errors are split by who is at fault:
``RemoteProtocolError`` when the peer sent something we cannot accept,
``LocalProtocolError`` when our own code asked the protocol to do something
that is not allowed in its current state.

Storage-level failures reuse ZODB's own ``POSException`` classes, so that
ZODB applications and ZEO clients see the exceptions they already know.
"""


class ZodbServerError(Exception):
    """Root of every error raised by zodbserver itself."""


class ProtocolError(ZodbServerError):
    """The ZEO wire protocol was violated."""


class RemoteProtocolError(ProtocolError):
    """The peer sent bytes or messages that break the protocol."""


class FrameTooLargeError(RemoteProtocolError):
    """A frame's length prefix exceeds the configured maximum."""


class LocalProtocolError(ProtocolError):
    """Our side tried to do something the protocol state does not allow."""


class ConfigurationError(ZodbServerError):
    """A configuration file, option or command-line argument is wrong."""


class StorageInUseError(ZodbServerError):
    """The storage's files are locked by another process."""


class TransactionSpoolError(ZodbServerError):
    """A transaction's spool file cannot be read back: it is truncated or
    damaged, or writing it failed (``server/spool.py``)."""
