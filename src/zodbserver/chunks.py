"""Blob files read in wire-sized pieces, for uploads and downloads alike.

Both ends stream a blob as calls that carry ``BLOB_CHUNK_SIZE`` bytes each
(ZEO's size).  The file is read a chunk at a time, straight into the
objects that go on the wire: no large read buffer to slice up, and every
allocation small enough for the C library to reuse from its free lists
instead of mapping (and faulting in) fresh memory for each read.

An event loop must never wait for the disk, yet a trip to a worker thread
for every read costs a blob download a good part of its time when the file
is in the page cache, as recently used blobs are.  ``next_chunks`` first
tries a read that the kernel fails rather than let wait (Linux's
``RWF_NOWAIT``) and goes to a thread only when that fails.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from typing import Any, BinaryIO

#: ZEO's chunk size for blob transfers in both directions.
BLOB_CHUNK_SIZE = 59000
#: Chunks read per trip to a thread (then sent before reading more).
CHUNKS_PER_READ = 32

#: What a chunk is: bytes read by a thread, a filled buffer read at once.
Chunk = bytes | bytearray
#: Runs a blocking call in a worker thread: ``asyncio.to_thread``'s shape.
InThread = Callable[..., Awaitable[Any]]

#: The read flag that makes a read fail instead of waiting (0: none here).
_NOWAIT: int = getattr(os, "RWF_NOWAIT", 0)


def read_chunks(stream: BinaryIO) -> list[Chunk]:
    """Up to ``CHUNKS_PER_READ`` chunks; fewer, or none, at the end."""
    chunks: list[Chunk] = []
    while len(chunks) < CHUNKS_PER_READ:
        chunk = stream.read(BLOB_CHUNK_SIZE)
        if not chunk:
            break
        chunks.append(chunk)
        if len(chunk) < BLOB_CHUNK_SIZE:
            break
    return chunks


def read_cached_chunks(stream: BinaryIO) -> list[Chunk] | None:
    """What ``read_chunks(stream)`` would return, read only if the page
    cache holds all of it: one ``preadv`` that the kernel fails rather than
    wait for the disk.  ``None``, with the stream where it was, if any of it
    would have to come from the disk or the system cannot tell."""
    if not _NOWAIT:
        return None
    try:
        descriptor = stream.fileno()
        position = stream.tell()
        remaining = os.fstat(descriptor).st_size - position
        whole, tail = divmod(remaining, BLOB_CHUNK_SIZE)
        sizes = [BLOB_CHUNK_SIZE] * min(whole, CHUNKS_PER_READ)
        if whole < CHUNKS_PER_READ and tail:
            sizes.append(tail)
        buffers = [bytearray(size) for size in sizes]
        if buffers and os.preadv(descriptor, buffers, position, _NOWAIT) < sum(sizes):
            return None  # partly cached: the rest would wait
    except (OSError, ValueError):  # would block, unsupported, not a file
        return None
    stream.seek(position + sum(sizes))
    chunks: list[Chunk] = [*buffers]
    return chunks


async def next_chunks(
    stream: BinaryIO, in_thread: InThread = asyncio.to_thread
) -> list[Chunk]:
    """``read_chunks(stream)``: at once from the page cache when it holds
    them, else in a worker thread (``in_thread``: the caller's pool)."""
    chunks = read_cached_chunks(stream)
    if chunks is None:
        chunks = await in_thread(read_chunks, stream)
    return chunks


def at_end(chunks: list[Chunk]) -> bool:
    """Whether ``read_chunks`` returned the last of its file."""
    return len(chunks) < CHUNKS_PER_READ or len(chunks[-1]) < BLOB_CHUNK_SIZE


def open_and_read(path: str) -> tuple[BinaryIO, list[Chunk]]:
    """Open a blob file and read its first chunks."""
    # Buffered: its read(n) returns short only at the end of the file.
    stream = open(path, "rb")  # noqa: SIM115 - the caller closes it
    try:
        return stream, read_chunks(stream)
    except BaseException:
        stream.close()
        raise
