"""Blob files read in wire-sized pieces, for uploads and downloads alike.

Both ends stream a blob as calls that carry ``BLOB_CHUNK_SIZE`` bytes each
(ZEO's size).  The file is read a chunk at a time, straight into the bytes
objects that go on the wire: no large read buffer to slice up, and every
allocation small enough for the C library to reuse from its free lists
instead of mapping (and faulting in) fresh memory for each read.
"""

from __future__ import annotations

from typing import BinaryIO

#: ZEO's chunk size for blob transfers in both directions.
BLOB_CHUNK_SIZE = 59000
#: Chunks read per trip to a thread (then sent before reading more).
CHUNKS_PER_READ = 32


def read_chunks(stream: BinaryIO) -> list[bytes]:
    """Up to ``CHUNKS_PER_READ`` chunks; fewer, or none, at the end."""
    chunks: list[bytes] = []
    while len(chunks) < CHUNKS_PER_READ:
        chunk = stream.read(BLOB_CHUNK_SIZE)
        if not chunk:
            break
        chunks.append(chunk)
        if len(chunk) < BLOB_CHUNK_SIZE:
            break
    return chunks


def at_end(chunks: list[bytes]) -> bool:
    """Whether ``read_chunks`` returned the last of its file."""
    return len(chunks) < CHUNKS_PER_READ or len(chunks[-1]) < BLOB_CHUNK_SIZE


def open_and_read(path: str) -> tuple[BinaryIO, list[bytes]]:
    """Open a blob file and read its first chunks (one trip to a thread)."""
    # Buffered: its read(n) returns short only at the end of the file.
    stream = open(path, "rb")  # noqa: SIM115 - the caller closes it
    try:
        return stream, read_chunks(stream)
    except BaseException:
        stream.close()
        raise
