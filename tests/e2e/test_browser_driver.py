"""The browser the page tests drive (support.browser): a real Chromium whose
text is what it rendered (scripts run, CSS applied), whose screenshots are
PNGs of what it shows, whose failures name their cause, and which leaves no
process behind."""

from __future__ import annotations

import re
import struct
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from support.browser import Browser, BrowserError
from support.server_processes import free_port
from support.waiting import wait_until

#: A page whose visible text is partly hidden by CSS and partly written by
#: a script (the product is nowhere in the HTML) at the load event, which
#: an image served ``IMAGE_DELAY`` seconds late holds back; "{served}"
#: becomes how many times the server has sent the page.
PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Driver check</title>
<style>.hidden { display: none }</style></head>
<body>
<h1>Served {served} times</h1>
<p class="hidden">Hidden by CSS</p>
<p id="written"></p>
<img src="/late.svg" alt="">
<script>
  addEventListener("load", () => {
    document.getElementById("written").textContent = "Six sevens: " + 6 * 7;
  });
</script>
</body></html>
"""
IMAGE = b"""<svg xmlns="http://www.w3.org/2000/svg" width="60" height="20">
<rect width="60" height="20" fill="teal"/></svg>
"""
IMAGE_DELAY = 0.3


class PageServer(HTTPServer):
    """``PAGE`` at ``/`` and ``IMAGE`` at ``/late.svg`` on 127.0.0.1,
    counting the times the page is sent."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), PageHandler)
        self.served = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/"


class PageHandler(BaseHTTPRequestHandler):
    server: PageServer

    def do_GET(self) -> None:
        if self.path == "/":
            self.server.served += 1
            body = PAGE.replace("{served}", str(self.server.served)).encode()
            content_type = "text/html; charset=utf-8"
        elif self.path == "/late.svg":
            time.sleep(IMAGE_DELAY)
            body, content_type = IMAGE, "image/svg+xml"
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        """Requests are not logged."""


@pytest.fixture
def page_server() -> Iterator[PageServer]:
    server = PageServer()
    thread = threading.Thread(target=server.serve_forever, args=(0.05,))
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        thread.join()
        server.server_close()


def live_processes_in_group(group: int) -> list[int]:
    """The processes of process group ``group`` that are not zombies."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # pid (comm) state ppid pgrp ...; comm may hold spaces and ")".
            state, _ppid, pgrp = stat.read_text().rpartition(")")[2].split()[:3]
        except OSError:  # the process has gone meanwhile
            continue
        if int(pgrp) == group and state != "Z":
            members.append(int(stat.parent.name))
    return members


def test_the_text_is_what_chromium_rendered(
    tmp_path: Path, page_server: PageServer
) -> None:
    assert "42" not in PAGE
    with Browser(tmp_path) as browser:
        page = browser.open(page_server.url)
        text = page.text()
        assert "Six sevens: 42" in text
        assert "Hidden by CSS" not in text
        # ... which is in the document all the same, hidden by the style.
        assert "Hidden by CSS" in page.evaluate("document.body.textContent")
        assert page.title() == "Driver check"
        assert "Served 1 times" in text
        # Each load is awaited: the script has written its line anew.
        reloaded = page.reload().text()
        assert "Served 2 times" in reloaded
        assert "Six sevens: 42" in reloaded
        opened_again = page.open(page_server.url).text()
        assert "Served 3 times" in opened_again
        assert "Six sevens: 42" in opened_again
        assert page.evaluate("[1 + 1, 'two', {two: null}]") == [2, "two", {"two": None}]


def test_a_screenshot_is_a_png_of_what_the_tab_shows(
    tmp_path: Path, page_server: PageServer
) -> None:
    with Browser(tmp_path) as browser:
        page = browser.open(page_server.url)
        viewport = page.evaluate(
            "[innerWidth, innerHeight].map(n => n * devicePixelRatio)"
        )
        shot = page.screenshot(tmp_path / "page.png").read_bytes()
        blank = browser.open("about:blank").screenshot(tmp_path / "blank.png")
    assert shot[:8] == b"\x89PNG\r\n\x1a\n"
    assert shot[12:16] == b"IHDR"
    assert list(struct.unpack(">II", shot[16:24])) == viewport
    # The heading, the lines and the image take bytes a white tab does not.
    assert len(shot) > len(blank.read_bytes()) + 1000


def test_closing_leaves_no_chromium_process(tmp_path: Path) -> None:
    with Browser(tmp_path) as browser:
        browser.open("about:blank")
        group = browser.pid
        assert len(live_processes_in_group(group)) > 1  # renderers and helpers
    wait_until(
        lambda: not live_processes_in_group(group), "Chromium's processes to end"
    )


def test_failures_say_what_failed(tmp_path: Path) -> None:
    with Browser(tmp_path) as browser:
        page = browser.open("about:blank")
        with pytest.raises(BrowserError, match="threw RangeError: no such shelf"):
            page.evaluate('throw new RangeError("no such shelf")')
        with pytest.raises(
            BrowserError,
            match=r"timed out after 0\.2s waiting for Chromium's answer to "
            r"Runtime\.evaluate",
        ):
            page.evaluate(
                "new Promise(done => setTimeout(done, 800, 'late'))", timeout=0.2
            )
        # That answer, when it comes, is not taken for this one's, which
        # comes after it.
        assert page.evaluate("new Promise(done => setTimeout(done, 1000, 42))") == 42
        with pytest.raises(BrowserError, match=r"refused No\.such .*wasn't found"):
            page.command("No.such")
        closed = f"http://127.0.0.1:{free_port()}/"
        with pytest.raises(
            BrowserError, match=f"cannot open {re.escape(closed)}: net::ERR_"
        ):
            page.open(closed)


def test_a_missing_failing_or_silent_chromium_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "no-chromium"
    monkeypatch.setenv("ZODBSERVER_CHROMIUM", str(missing))
    with pytest.raises(
        BrowserError, match=f"{re.escape(str(missing))}: no such executable"
    ):
        Browser(tmp_path)

    failing = tmp_path / "failing-chromium"
    failing.write_text("#!/bin/sh\necho 'cannot open the display' >&2\nexit 3\n")
    failing.chmod(0o755)
    monkeypatch.setenv("ZODBSERVER_CHROMIUM", str(failing))
    with pytest.raises(
        BrowserError,
        match=rf"(?s)\({re.escape(str(failing))}\) exited with status 3 .*"
        "cannot open the display",
    ):
        Browser(tmp_path)

    silent = tmp_path / "silent-chromium"
    silent.write_text("#!/bin/sh\nexec sleep 60\n")
    silent.chmod(0o755)
    monkeypatch.setenv("ZODBSERVER_CHROMIUM", str(silent))
    with pytest.raises(
        BrowserError,
        match=r"timed out after 0\.5s waiting for Chromium's answer to "
        r"Browser\.getVersion",
    ):
        Browser(tmp_path, timeout=0.5)
