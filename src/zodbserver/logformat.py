"""JSON log lines, for log shippers that read one JSON object a line.

The server's log stays ZEO's text by default.  A ``<logfile>`` (or any
ZConfig log handler section) names this formatter with ZConfig's own
``formatter`` key::

    <eventlog>
      <logfile>
        path var/log/zeoserver.log
        formatter zodbserver.logformat.JSONFormatter
      </logfile>
    </eventlog>

and the recipe writes that line for ``zeo-log-json = true``.  Each record
becomes one line::

    {"time": "2026-12-04T19:30:00.123Z", "level": "INFO",
     "logger": "zodbserver.server", "message": "...", "pid": 4242}

(shown folded here), with ``exception`` (the formatted traceback) when the
record carries one and ``stack`` when it was logged with ``stack_info``.
``time`` is UTC, ISO 8601 with milliseconds; ``message`` is the message with
its arguments filled in.  Newlines in a message or a traceback are escaped,
so a record is always one line; other characters are written as they are
(``ensure_ascii=False``), so write the file as UTF-8 (``encoding utf-8``,
as the recipe does).  The section's ``format``, ``dateformat`` and
``style`` are accepted, as ZConfig passes them, and do not change the line.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

__all__ = ["JSONFormatter"]

#: Characters ``json.dumps(ensure_ascii=False)`` leaves as they are but that
#: ``str.splitlines`` and some readers take for line ends.
_LINE_BREAKS = str.maketrans(
    {"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"}
)


class JSONFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, pid.

    The constructor is :class:`logging.Formatter`'s, so ZConfig's
    ``FormatterFactory`` calls it with the section's ``format``,
    ``dateformat`` and ``style`` as it calls any formatter; none of them
    changes the output.
    """

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        if record.exc_info and not record.exc_text:
            # Cached, as logging.Formatter does, for the other handlers.
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        line = json.dumps(entry, ensure_ascii=False)
        return line.translate(_LINE_BREAKS)

    def formatTime(  # noqa: N802 - logging's name
        self, record: logging.LogRecord, datefmt: str | None = None
    ) -> str:
        """``2026-12-04T19:30:00.123Z``: UTC, whatever ``datefmt`` says."""
        seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        return f"{seconds}.{int(record.msecs):03d}Z"
