"""JSON log lines: the formatter, and the formatter named in a zeo.conf."""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from zodbserver.config import load_config
from zodbserver.logformat import JSONFormatter

#: 2026-12-04T19:30:00.123Z
ISO_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\Z")


def record(
    message: str, *args: object, exc_info: Any = None, **attributes: Any
) -> logging.LogRecord:
    made = logging.LogRecord(
        "zodbserver.server", logging.WARNING, __file__, 1, message, args, exc_info
    )
    made.__dict__.update(attributes)
    return made


def parse(line: str) -> dict[str, Any]:
    """The one JSON object ``line`` must be."""
    assert "\n" not in line
    assert line.splitlines() == [line]
    entry: dict[str, Any] = json.loads(line)
    return entry


def test_a_record_with_arguments() -> None:
    line = JSONFormatter().format(record("%d clients on %s", 3, "8100"))
    entry = parse(line)
    assert entry.pop("time")
    assert entry == {
        "level": "WARNING",
        "logger": "zodbserver.server",
        "message": "3 clients on 8100",
        "pid": os.getpid(),
    }


def test_the_time_is_utc_with_milliseconds() -> None:
    # 2026-12-04 19:30:00.1234 UTC, as LogRecord sets them from time.time()
    logged = record("x", created=1796412600.1234, msecs=123.4)
    entry = parse(JSONFormatter().format(logged))
    assert entry["time"] == "2026-12-04T19:30:00.123Z"
    now = parse(JSONFormatter().format(record("x")))["time"]
    assert ISO_UTC.match(now), now


def test_a_record_with_an_exception() -> None:
    try:
        raise KeyError("missing oid")
    except KeyError:
        exc_info = sys.exc_info()
    logged = record("commit failed", exc_info=exc_info)
    entry = parse(JSONFormatter().format(logged))
    assert entry["message"] == "commit failed"
    assert entry["exception"].startswith("Traceback (most recent call last):\n")
    assert entry["exception"].endswith("KeyError: 'missing oid'")
    assert "stack" not in entry
    # Cached on the record, as logging.Formatter does, for other handlers.
    assert logged.exc_text == entry["exception"]


def test_a_record_with_a_stack() -> None:
    logged = record("here", stack_info="Stack (most recent call last):\n  File x")
    entry = parse(JSONFormatter().format(logged))
    assert entry["stack"] == "Stack (most recent call last):\n  File x"
    assert "exception" not in entry


def test_non_ascii_and_line_breaks_stay_on_one_line() -> None:
    message = "Grüße\nfrom 東京\r\n\x85\u2028\u2029\x0b\x1c: %s"
    line = JSONFormatter().format(record(message, "ünïcode"))
    assert "Grüße" in line  # readable, not \u00fc
    assert "東京" in line
    entry = parse(line)
    assert entry["message"] == message % "ünïcode"


@pytest.mark.parametrize(
    ("style", "log_format"),
    [
        ("classic", "%(levelname)s %(message)s"),
        ("format", "{levelname} {message}"),
        ("template", "$levelname $message"),
        ("safe-template", "$levelname $message $nosuchfield"),
    ],
)
def test_zeo_conf_names_the_formatter(
    tmp_path: Path, style: str, log_format: str
) -> None:
    log = tmp_path / "zeoserver.log"
    conf = tmp_path / "zeo.conf"
    conf.write_text(
        f"""\
<filestorage 1>
  path {tmp_path / "Data.fs"}
</filestorage>
<eventlog>
  <logfile>
    path {log}
    encoding utf-8
    formatter zodbserver.logformat.JSONFormatter
    style {style}
    format {log_format.replace("$", "$$")}
  </logfile>
</eventlog>
"""
    )
    eventlog = load_config(conf).eventlog
    assert eventlog is not None
    (factory,) = eventlog.handler_factories
    handler: logging.Handler = factory()
    logger = logging.getLogger("zodbserver.test_log_format")
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    try:
        assert isinstance(handler.formatter, JSONFormatter)
        logger.info("storage %r opened\nfrom %s", "1", "Данные.fs")
        try:
            1 / 0  # noqa: B018
        except ZeroDivisionError:
            logger.exception("commit failed")
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
        logger.setLevel(logging.NOTSET)
        handler.close()
    lines = log.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2, lines
    opened, failed = (parse(line) for line in lines)
    assert opened["message"] == "storage '1' opened\nfrom Данные.fs"
    assert opened["level"] == "INFO"
    assert opened["logger"] == "zodbserver.test_log_format"
    assert opened["pid"] == os.getpid()
    assert ISO_UTC.match(opened["time"])
    assert "exception" not in opened
    assert failed["level"] == "ERROR"
    assert failed["exception"].endswith("ZeroDivisionError: division by zero")
