"""A headless Chromium for tests of the pages a person reads (the monitor's
status page): what the browser renders and runs, not the HTML as served.

``Browser`` starts Chromium with a fresh profile and speaks the DevTools
protocol to it over a pair of pipes (``--remote-debugging-pipe``: JSON
messages, each ended by a NUL, commands on Chromium's fd 3, answers and
events on its fd 4), so the suite needs no Python package for it, only the
browser: ``chromium`` or ``chromium-browser`` on PATH, or the one that
``ZODBSERVER_CHROMIUM`` names::

    with Browser(tmp_path) as browser:
        page = browser.open(f"http://127.0.0.1:{port}/")
        assert "Storages" in page.text()

Every wait is bounded (``timeout``, 30 seconds unless the caller says
otherwise), so a test fails rather than hangs, with a ``BrowserError`` that
says what went wrong.  One thread at a time drives a browser.
"""

from __future__ import annotations

import base64
import contextlib
import json
import math
import os
import select
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

#: Seconds any one wait may take unless the caller says otherwise.
TIMEOUT = 30.0
#: Seconds for each step of ending Chromium: its answer to ``Browser.close``,
#: its exit then, its exit after SIGTERM, after SIGKILL.
STOP_TIMEOUT = 10.0
#: Names the Chromium to run (a path, or a name on PATH) instead of
#: ``NAMES``.
ENVIRONMENT_VARIABLE = "ZODBSERVER_CHROMIUM"
NAMES = ("chromium", "chromium-browser")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    # /dev/shm is small in containers; a renderer that runs out crashes.
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--remote-debugging-pipe",
)
#: Bytes of Chromium's stderr that errors quote.
STDERR_TAIL = 3000

# Chromium reads commands from its fd 3 and writes to its fd 4, and
# subprocess puts descriptors at chosen numbers only for stdin, stdout and
# stderr: pass_fds keeps each descriptor's own number, and what a preexec_fn
# dup2s onto 3 and 4 is closed after it runs (preexec_fn is unsafe in a
# process with threads besides).  So the pipes go in as a shell's stdin and
# stdout; the shell moves them onto 3 and 4, points stdin at /dev/null and
# stdout at stderr, and becomes Chromium ("$0" the binary, "$@" its
# arguments).
_ONTO_3_AND_4 = 'exec "$0" "$@" 3<&0 4>&1 </dev/null >&2'


class BrowserError(AssertionError):
    """Chromium missing, failing or slow, a DevTools command refused, a page
    that could not be loaded, or a script that threw.

    An ``AssertionError``, as ``support.waiting``'s timeouts are: a page that
    never loads or a script that throws fails the test as a wrong value
    does, and a missing browser is part of the platform the suite expects,
    whose absence fails the tests that need it rather than skip them
    (README).
    """


def chromium_binary() -> str:
    """The Chromium to run: ``$ZODBSERVER_CHROMIUM`` if set, else the first
    of ``NAMES`` on PATH."""
    named = os.environ.get(ENVIRONMENT_VARIABLE)
    if named:
        found = shutil.which(named)
        if found is None:
            raise BrowserError(
                f"{ENVIRONMENT_VARIABLE}={named}: no such executable Chromium"
            )
        return found
    for name in NAMES:
        if found := shutil.which(name):
            return found
    raise BrowserError(
        f"Chromium not found: neither {' nor '.join(NAMES)} is on PATH "
        f"(apt-get install chromium) and {ENVIRONMENT_VARIABLE} is not set"
    )


class _Wait:
    """A wait of ``seconds`` from now for ``what``."""

    def __init__(self, what: str, seconds: float) -> None:
        self.what = what
        self.seconds = seconds
        self.deadline = time.monotonic() + seconds

    def milliseconds_left(self) -> int:
        """What is left of the wait, for ``poll``; ``BrowserError`` once
        nothing is."""
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise BrowserError(
                f"timed out after {self.seconds:g}s waiting for {self.what}"
            )
        return math.ceil(left * 1000)


class Browser:
    """A headless Chromium with a fresh profile in a new directory under
    ``directory``, started at once; ``close`` (or the end of a ``with``
    block) ends it and every process it started."""

    def __init__(self, directory: Path | str, *, timeout: float = TIMEOUT) -> None:
        """``BrowserError`` if Chromium is missing or does not answer within
        ``timeout`` seconds, the default wait of every other call too."""
        self.timeout = timeout
        self.binary = chromium_binary()
        home = Path(tempfile.mkdtemp(prefix="chromium-", dir=directory))
        self.stderr_path = home / "stderr.log"
        self._closed = False
        self._last_id = 0
        self._buffer = bytearray()
        #: Events read while waiting for something else, oldest first.
        self._events: list[dict[str, Any]] = []
        commands_read, self._commands = os.pipe()
        self._replies, replies_write = os.pipe()
        argv = [self.binary, *FLAGS, f"--user-data-dir={home / 'profile'}"]
        try:
            with open(self.stderr_path, "wb") as stderr:
                self._process = subprocess.Popen(
                    ["/bin/sh", "-c", _ONTO_3_AND_4, *argv, "about:blank"],
                    stdin=commands_read,
                    stdout=replies_write,
                    stderr=stderr,
                    # Its renderers and helpers join the group, to be ended
                    # with it.
                    process_group=0,
                )
        except OSError as exc:
            os.close(self._commands)
            os.close(self._replies)
            raise BrowserError(f"cannot start Chromium ({self.binary}): {exc}") from exc
        finally:
            os.close(commands_read)
            os.close(replies_write)
        os.set_blocking(self._commands, False)
        self._writable = select.poll()
        self._writable.register(self._commands, select.POLLOUT)
        self._readable = select.poll()
        self._readable.register(self._replies, select.POLLIN)
        try:
            #: Chromium's name for itself, "Chrome/<version>".
            self.version: str = self.command("Browser.getVersion")["product"]
        except BaseException:
            self._end()
            raise

    @property
    def pid(self) -> int:
        """Chromium's process id, which is also its process group's."""
        return self._process.pid

    def open(self, url: str) -> Page:
        """A new tab, once ``url`` has loaded in it (``Page.open``)."""
        wait = _Wait("a new tab", self.timeout)
        target = self._call("Target.createTarget", {"url": "about:blank"}, None, wait)
        attach = {"targetId": target["targetId"], "flatten": True}
        attached = self._call("Target.attachToTarget", attach, None, wait)
        page = Page(self, attached["sessionId"])
        self._call("Page.enable", None, page.session_id, wait)
        enable = {"enabled": True}
        self._call("Page.setLifecycleEventsEnabled", enable, page.session_id, wait)
        return page.open(url)

    def command(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        *,
        session_id: str | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """Send DevTools command ``method``, to the page of ``session_id`` if
        given, else to the browser, and return its result; ``BrowserError``
        if Chromium answers with an error."""
        seconds = self.timeout if timeout is None else timeout
        wait = _Wait(f"Chromium's answer to {method}", seconds)
        return self._call(method, params, session_id, wait)

    def stderr_tail(self) -> str:
        """The end of what Chromium wrote to stderr (and stdout)."""
        with contextlib.suppress(OSError), open(self.stderr_path, "rb") as stderr:
            stderr.seek(max(0, stderr.seek(0, os.SEEK_END) - STDERR_TAIL))
            return stderr.read().decode(errors="replace")
        return ""

    def close(self) -> None:
        """Ask Chromium to close, and end it by signals if it does not."""
        if self._closed:
            return
        try:
            if self._process.poll() is None:
                with contextlib.suppress(BrowserError, subprocess.TimeoutExpired):
                    wait = _Wait("Chromium's answer to Browser.close", STOP_TIMEOUT)
                    self._call("Browser.close", None, None, wait)
                    self._process.wait(STOP_TIMEOUT)
        finally:
            self._end()

    def __enter__(self) -> Browser:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _end(self) -> None:
        """SIGTERM, then SIGKILL, Chromium unless it exited; reap it, SIGKILL
        what is left of its process group, and close the pipes."""
        self._closed = True
        try:
            if self._process.poll() is None:
                self._process.terminate()
                try:
                    self._process.wait(STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    self._process.kill()
                    self._process.wait(STOP_TIMEOUT)
        finally:
            # While a member lives, the group keeps its id (the reaped
            # Chromium's pid), which no new process can take.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._process.pid, signal.SIGKILL)
            os.close(self._commands)
            os.close(self._replies)

    def _call(
        self,
        method: str,
        params: dict[str, Any] | None,
        session_id: str | None,
        wait: _Wait,
    ) -> dict[str, Any]:
        if self._closed:
            raise BrowserError(f"{method}: the browser is closed")
        self._last_id += 1
        command: dict[str, Any] = {
            "id": self._last_id,
            "method": method,
            "params": params or {},
        }
        if session_id is not None:
            command["sessionId"] = session_id
        self._send(json.dumps(command).encode() + b"\0", wait)
        while True:
            message = self._receive(wait)
            if message.get("id") == command["id"]:
                break
            # Other answers are late ones, to commands whose wait timed out.
            if "id" not in message:
                self._events.append(message)
        if "error" in message:
            error = message["error"]
            data = f": {error['data']}" if "data" in error else ""
            raise BrowserError(
                f"Chromium refused {method} {json.dumps(params or {})}: "
                f"{error.get('message')} ({error.get('code')}){data}"
            )
        result: dict[str, Any] = message.get("result", {})
        return result

    def _event(
        self,
        session_id: str,
        method: str,
        match: Callable[[dict[str, Any]], bool],
        wait: _Wait,
    ) -> dict[str, Any]:
        """The parameters of the first event ``method`` from the page of
        ``session_id`` whose parameters ``match``, read or still to come."""

        def fits(message: dict[str, Any]) -> bool:
            if message.get("sessionId") != session_id:
                return False
            if message.get("method") == "Inspector.targetCrashed":
                raise BrowserError(f"the tab crashed, waiting for {wait.what}")
            return message.get("method") == method and match(message["params"])

        for index, message in enumerate(self._events):
            if fits(message):
                del self._events[index]
                params: dict[str, Any] = message["params"]
                return params
        while True:
            message = self._receive(wait)
            if fits(message):
                params = message["params"]
                return params
            if "id" not in message:
                self._events.append(message)

    def _forget(self, session_id: str) -> None:
        """Drop the events read from the page of ``session_id``: a new
        navigation starts there."""
        self._events = [e for e in self._events if e.get("sessionId") != session_id]

    def _send(self, data: bytes, wait: _Wait) -> None:
        view = memoryview(data)
        while view:
            if not self._writable.poll(wait.milliseconds_left()):
                continue
            try:
                view = view[os.write(self._commands, view) :]
            except BlockingIOError:
                continue
            except BrokenPipeError:
                raise self._gone(wait) from None

    def _receive(self, wait: _Wait) -> dict[str, Any]:
        while (end := self._buffer.find(b"\0")) < 0:
            if self._readable.poll(wait.milliseconds_left()):
                chunk = os.read(self._replies, 1 << 20)
                if not chunk:
                    raise self._gone(wait)
                self._buffer += chunk
        message: dict[str, Any] = json.loads(self._buffer[:end])
        del self._buffer[: end + 1]
        return message

    def _gone(self, wait: _Wait) -> BrowserError:
        """The error for Chromium having closed its end of the pipes."""
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._process.wait(STOP_TIMEOUT)
        status = self._process.returncode
        how = "closed its pipe" if status is None else f"exited with status {status}"
        tail = self.stderr_tail().rstrip() or "(nothing)"
        return BrowserError(
            f"Chromium ({self.binary}) {how} while we waited for {wait.what}; "
            f"its stderr ends:\n{tail}"
        )


class Page:
    """One tab of a ``Browser``, attached as DevTools session
    ``session_id``."""

    def __init__(self, browser: Browser, session_id: str) -> None:
        self.browser = browser
        self.session_id = session_id

    def open(self, url: str) -> Page:
        """Navigate to ``url``; return once its load event fired."""
        wait = _Wait(f"the load of {url}", self.browser.timeout)
        self.browser._forget(self.session_id)
        navigate = {"url": url}
        result = self.browser._call("Page.navigate", navigate, self.session_id, wait)
        loader_id = result.get("loaderId")
        if "errorText" in result:
            # Chromium shows its error page instead; the tab takes further
            # commands once that has loaded.
            with contextlib.suppress(BrowserError):
                if loader_id:
                    self._loaded(loader_id, wait)
            raise BrowserError(f"cannot open {url}: {result['errorText']}")
        # Without a loader the navigation stayed in the document (a
        # fragment): there is nothing to load.
        if loader_id:
            self._loaded(loader_id, wait)
        return self

    def reload(self) -> Page:
        """Load the page anew; return once its load event fired."""
        wait = _Wait("the page's reload", self.browser.timeout)
        self.browser._forget(self.session_id)
        self.browser._call("Page.reload", None, self.session_id, wait)
        frame = self.browser._event(
            self.session_id,
            "Page.frameNavigated",
            lambda params: "parentId" not in params["frame"],
            wait,
        )["frame"]
        if "unreachableUrl" in frame:
            raise BrowserError(f"cannot reload {frame['unreachableUrl']}")
        self._loaded(frame["loaderId"], wait)
        return self

    def text(self) -> str:
        """The page's text as the browser renders it: ``innerText`` of its
        body, without what CSS hides, with what scripts wrote."""
        return str(self.evaluate("document.body.innerText"))

    def title(self) -> str:
        """The document's title."""
        return str(self.evaluate("document.title"))

    def evaluate(self, expression: str, *, timeout: float | None = None) -> Any:
        """The value of JavaScript ``expression`` in the page, awaited if it
        is a promise, as JSON carries it (``undefined`` as None; NaN,
        infinities and -0 as floats, bigints as ints); ``BrowserError``
        naming what it threw if it throws."""
        params = {
            "expression": expression,
            "returnByValue": True,
            "awaitPromise": True,
        }
        result = self.command("Runtime.evaluate", params, timeout=timeout)
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            thrown = details.get("exception", {})
            if "description" in thrown:
                what = thrown["description"]
            elif "value" in thrown:
                what = json.dumps(thrown["value"])
            else:
                what = details.get("text", "an exception")
            raise BrowserError(f"JavaScript {expression!r} threw {what}")
        value = result["result"]
        if "unserializableValue" in value:
            literal: str = value["unserializableValue"]
            return int(literal[:-1]) if literal.endswith("n") else float(literal)
        return value.get("value")

    def screenshot(self, path: Path | str) -> Path:
        """Write what the tab shows (its viewport) to ``path`` as a PNG."""
        shot = self.command("Page.captureScreenshot", {"format": "png"})
        path = Path(path)
        path.write_bytes(base64.b64decode(shot["data"]))
        return path

    def command(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        *,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """``Browser.command`` to this tab."""
        return self.browser.command(
            method, params, session_id=self.session_id, timeout=timeout
        )

    def _loaded(self, loader_id: str, wait: _Wait) -> None:
        """Wait for the load event of the document that ``loader_id``
        loads."""
        self.browser._event(
            self.session_id,
            "Page.lifecycleEvent",
            lambda params: params["name"] == "load" and params["loaderId"] == loader_id,
            wait,
        )
