"""Servers on one PostgreSQL database wake each other when they commit.

Each server looks for the others' commits every ``database-poll-interval``
(``mvcc``).  That alone finds every commit, whoever made it -- RelStorage
itself never notifies -- but a client of another server then learns of a
commit up to one interval late.  So a server also announces each commit it
makes on a PostgreSQL channel (``NOTIFY``) and listens on it (``LISTEN``):
a notice wakes the look at once.  A notice carries the announcing server's
token, so that a server does not wake for its own commits.

PostgreSQL's notifications need an autocommit session of their own, and
the psycopg2 driver's ``notifies``; with another driver the servers only
poll.

Who owns what: ``CommitNotices`` owns its two database sessions and its
listening thread.  ``announce`` hands the notice to a thread of its own, so
that a commit's finish does not wait for it; ``wake`` is called in the
listening thread and must be thread-safe.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

logger = logging.getLogger(__name__)

CHANNEL = "zodbserver_commits"

#: Seconds between attempts to listen again after the database went away.
RETRY = 1.0


def commit_notices(storage: Any) -> CommitNotices | None:
    """Notices for a RelStorage on PostgreSQL through psycopg2; None for
    any other database or driver."""
    adapter: Any = getattr(storage, "_adapter", None)
    driver = getattr(adapter, "driver", None)
    if getattr(driver, "MODULE_NAME", None) != "psycopg2":
        return None
    connect: Callable[[], Any] = adapter.connmanager.open
    return CommitNotices(connect)


class CommitNotices:
    def __init__(self, open_session: Callable[[], tuple[Any, Any]]) -> None:
        self._open_session = open_session
        self.token = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        self._announcer: Any = None
        self._announcing = ThreadPoolExecutor(1, thread_name_prefix="commit notice")
        self._stopping = threading.Event()
        #: Written to by ``close``: wakes the listening thread at once.
        self._wakeup_read, self._wakeup_write = os.pipe()
        self._thread: threading.Thread | None = None
        self._listener: Any = None

    def _session(self) -> Any:
        connection, _ = self._open_session()
        connection.rollback()
        connection.autocommit = True
        return connection

    # -- announcing

    def announce(self) -> None:
        """Tell the other servers that this one committed (soon, from the
        announcing thread)."""
        self._announcing.submit(self._notify)

    def _notify(self) -> None:
        """A failure is logged, not raised: the commit is made, and the
        others poll anyway."""
        try:
            if self._announcer is None:
                self._announcer = self._session()
            with self._announcer.cursor() as cursor:
                cursor.execute("SELECT pg_notify(%s, %s)", (CHANNEL, self.token))
        except Exception as error:
            logger.warning("cannot announce a commit to the other servers: %s", error)
            self._close_announcer()

    def _close_announcer(self) -> None:
        announcer, self._announcer = self._announcer, None
        if announcer is not None:
            with contextlib.suppress(Exception):
                announcer.close()

    # -- listening (a thread of its own)

    def start(self, wake: Callable[[], object]) -> None:
        """Call ``wake`` (from another thread) whenever another server
        announces a commit, until ``close``."""
        self._thread = threading.Thread(
            target=self._listen, args=(wake,), name="commit notices", daemon=True
        )
        self._thread.start()

    def _listen(self, wake: Callable[[], object]) -> None:
        while not self._stopping.is_set():
            try:
                self._listener = listener = self._session()
                with listener.cursor() as cursor:
                    cursor.execute(f"LISTEN {CHANNEL}")
                # A commit announced while we were not listening: look.
                wake()
                while not self._stopping.is_set():
                    ready, _, _ = select.select(
                        [listener, self._wakeup_read], [], [], RETRY
                    )
                    if listener not in ready:
                        continue
                    listener.poll()
                    others = [
                        notice
                        for notice in listener.notifies
                        if notice.payload != self.token
                    ]
                    listener.notifies.clear()
                    if others:
                        wake()
            except Exception as error:
                if self._stopping.is_set():
                    return
                logger.warning(
                    "not listening for the other servers' commits (polling "
                    "meanwhile): %s",
                    error,
                )
                self._stopping.wait(RETRY)
            finally:
                listener, self._listener = self._listener, None
                if listener is not None:
                    with contextlib.suppress(Exception):
                        listener.close()

    def close(self) -> None:
        if self._stopping.is_set():
            return
        self._stopping.set()
        os.write(self._wakeup_write, b"x")
        if self._thread is not None:
            self._thread.join(5 * RETRY)
        os.close(self._wakeup_read)
        os.close(self._wakeup_write)
        self._announcing.shutdown(wait=True)
        self._close_announcer()
