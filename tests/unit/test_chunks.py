"""Reading blob files in wire-sized chunks."""

from __future__ import annotations

import asyncio
import io
import os
import tempfile
from collections.abc import Callable
from typing import BinaryIO

from hypothesis import given, settings
from hypothesis import strategies as st

from zodbserver.chunks import (
    BLOB_CHUNK_SIZE,
    CHUNKS_PER_READ,
    Chunk,
    at_end,
    next_chunks,
    read_cached_chunks,
    read_chunks,
)

READ = CHUNKS_PER_READ * BLOB_CHUNK_SIZE
EDGES = [0, 1, BLOB_CHUNK_SIZE - 1, BLOB_CHUNK_SIZE, READ - 1, READ, READ + 1, 2 * READ]


def read_all(
    data: bytes, read: Callable[[BinaryIO], list[Chunk]] = read_chunks
) -> tuple[list[list[Chunk]], bytes]:
    stream = io.BytesIO(data)
    reads = [read(stream)]
    while not at_end(reads[-1]):
        reads.append(read(stream))
    return reads, b"".join(b"".join(chunks) for chunks in reads)


def pattern(size: int) -> bytes:
    return bytes(range(256)) * (size // 256) + bytes(size % 256)


def read_file_cached(data: bytes) -> list[list[Chunk]]:
    """Every batch ``read_cached_chunks`` gives for a file holding ``data``
    (written just now, so in the page cache)."""
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "blob")
        with open(path, "wb") as file:
            file.write(data)
        with open(path, "rb") as stream:
            reads: list[list[Chunk]] = []
            while not reads or not at_end(reads[-1]):
                batch = read_cached_chunks(stream)
                assert batch is not None, "a file in the page cache read as uncached"
                reads.append(batch)
    return reads


@given(st.one_of(st.sampled_from(EDGES), st.integers(0, 3 * READ)))
def test_reads_give_back_the_file_in_chunks_of_at_most_the_wire_size(size: int) -> None:
    data = bytes(range(256)) * (size // 256) + bytes(size % 256)
    reads, joined = read_all(data)
    assert joined == data
    chunks = [chunk for batch in reads for chunk in batch]
    assert all(0 < len(chunk) <= BLOB_CHUNK_SIZE for chunk in chunks)
    assert all(len(chunk) == BLOB_CHUNK_SIZE for chunk in chunks[:-1])
    assert all(len(batch) <= CHUNKS_PER_READ for batch in reads)


def test_a_file_of_whole_reads_ends_with_an_empty_read() -> None:
    reads, _ = read_all(bytes(READ))
    assert [len(batch) for batch in reads] == [CHUNKS_PER_READ, 0]


#: The suite runs on Linux (README), whose preadv2 has RWF_NOWAIT.
LINUX_NOWAIT = "reads that never wait need Linux's RWF_NOWAIT"


@settings(max_examples=25, deadline=None)
@given(st.one_of(st.sampled_from(EDGES), st.integers(0, 3 * READ)))
def test_cached_reads_give_what_reads_in_a_thread_give(size: int) -> None:
    assert getattr(os, "RWF_NOWAIT", 0), LINUX_NOWAIT
    data = pattern(size)
    cached = read_file_cached(data)
    threaded, _ = read_all(data)
    assert [[bytes(chunk) for chunk in batch] for batch in cached] == threaded


def test_a_file_dropped_from_the_page_cache_is_read_whole(
    tmp_path: os.PathLike[str],
) -> None:
    """Dropped from memory, the file cannot be read without waiting (unless
    the kernel's readahead brought it back already): it is read in a
    thread from where the stream stood, and either way whole."""
    assert getattr(os, "RWF_NOWAIT", 0), LINUX_NOWAIT
    data = pattern(3 * BLOB_CHUNK_SIZE + 5)
    path = os.path.join(tmp_path, "blob")
    with open(path, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    with open(path, "rb") as stream:
        os.posix_fadvise(stream.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        cached = read_cached_chunks(stream)
        if cached is None:
            assert stream.tell() == 0
            chunks = asyncio.run(next_chunks(stream))
        else:
            chunks = cached
    assert b"".join(chunks) == data


def test_what_cannot_be_read_without_waiting_is_read_in_a_thread() -> None:
    reading, writing = os.pipe()
    os.write(writing, b"through a pipe")
    os.close(writing)
    with os.fdopen(reading, "rb") as stream:
        assert read_cached_chunks(stream) is None
        assert asyncio.run(next_chunks(stream)) == [b"through a pipe"]
