"""checkpoints.io.read_into: one pass over a file, its stretches read where they are
loaded, every byte hashed in order. No TensorFlow."""

from __future__ import annotations

import hashlib
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import checkpoints.io.read_into as read_into_module
from checkpoints.io.read_into import read_into


@pytest.fixture
def small_pieces(monkeypatch):
    """Pieces of 7 bytes, at most 2 queued: every boundary case in a few hundred bytes."""
    monkeypatch.setattr(read_into_module, "PIECE", 7)
    monkeypatch.setattr(read_into_module, "QUEUED", 2)


def _file(tmp_path, data: bytes) -> int:
    path = tmp_path / "file.bin"
    path.write_bytes(data)
    return os.open(path, os.O_RDONLY)


@st.composite
def file_and_placements(draw):
    data = draw(st.binary(min_size=0, max_size=300))
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=8)))
    placements = [(start, end - start) for start, end in zip(cuts[::2], cuts[1::2], strict=False)]
    return data, placements


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(case=file_and_placements(), hashed=st.booleans())
def test_every_placement_gets_its_bytes_and_the_hash_is_the_files(
    tmp_path, small_pieces, case, hashed
):
    data, placements = case
    fd = _file(tmp_path, data)
    try:
        buffers = [(offset, memoryview(bytearray(size))) for offset, size in placements]
        digest = hashlib.sha256() if hashed else None
        read_into(fd, len(data), buffers, digest)
    finally:
        os.close(fd)
    for offset, buffer in buffers:
        assert bytes(buffer) == data[offset : offset + len(buffer)]
    if hashed:
        assert digest.hexdigest() == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize(
    ("placements", "message"),
    [
        ([(0, 10), (5, 10)], "two datasets share the bytes at offset 5"),
        ([(95, 10)], "a dataset at offset 95 lies beyond the end of the file"),
    ],
)
def test_overlapping_or_outside_placements_are_refused_before_reading(
    tmp_path, small_pieces, placements, message
):
    fd = _file(tmp_path, bytes(100))
    buffers = [(offset, memoryview(bytearray(b"\xaa" * size))) for offset, size in placements]
    try:
        with pytest.raises(ValueError, match=message):
            read_into(fd, 100, buffers, hashlib.sha256())
    finally:
        os.close(fd)
    assert all(bytes(buffer) == b"\xaa" * len(buffer) for _, buffer in buffers)  # untouched


def test_a_file_shorter_than_its_listed_size_is_refused(tmp_path, small_pieces):
    fd = _file(tmp_path, bytes(50))
    try:
        with pytest.raises(ValueError, match="the file ends at 50 bytes, before its listed size"):
            read_into(fd, 60, [(40, memoryview(bytearray(20)))], hashlib.sha256())
    finally:
        os.close(fd)
