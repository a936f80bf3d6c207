"""Reading blob files in wire-sized chunks."""

from __future__ import annotations

import io

from hypothesis import given
from hypothesis import strategies as st

from zodbserver.chunks import BLOB_CHUNK_SIZE, CHUNKS_PER_READ, at_end, read_chunks

READ = CHUNKS_PER_READ * BLOB_CHUNK_SIZE
EDGES = [0, 1, BLOB_CHUNK_SIZE - 1, BLOB_CHUNK_SIZE, READ - 1, READ, READ + 1, 2 * READ]


def read_all(data: bytes) -> tuple[list[list[bytes]], bytes]:
    stream = io.BytesIO(data)
    reads = [read_chunks(stream)]
    while not at_end(reads[-1]):
        reads.append(read_chunks(stream))
    return reads, b"".join(b"".join(chunks) for chunks in reads)


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
