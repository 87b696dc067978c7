"""Checkpoint I/O: HDF5 files laid out in memory and streamed, hashes taken while writing.

``checkpoints.io.h5_layout`` lets h5py write only metadata and streams the
arrays' own buffers to their offsets; ``format.write_pieces_durably`` hashes
what it writes in the same pass and ``commit_checkpoint`` uses that hash
instead of re-reading the file, unless the file changed since.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import checkpoints.durable as durable_module
from checkpoints.durable import sha256_of, staging_dir, write_pieces_durably
from checkpoints.io.h5 import check_h5_file
from checkpoints.io.h5_layout import CHUNK, H5Layout, _MetadataFile
from checkpoints.manifest import commit_checkpoint, read_manifest, verify

ARRAYS = {
    "kernel": np.arange(6 * 7, dtype=np.float32).reshape(6, 7),
    "big": np.linspace(-1, 1, 300_000).astype(np.float64),  # several HDF5 pages
    "step": np.array(12, dtype=np.int64),  # a scalar: h5py allocates it late
    "mask": np.array([True, False, True]),
    "half": np.arange(5, dtype=np.float16),
    "empty": np.zeros((0, 4), dtype=np.float32),
}


def laid_out(arrays: dict[str, np.ndarray]) -> tuple[H5Layout, bytes]:
    with H5Layout() as layout:
        group = layout.root.create_group("layers/dense/vars")
        group.attrs["name"] = "dense"
        for name, array in arrays.items():
            layout.add(group, name, array, {"path": f"dense/{name}"})
    return layout, b"".join(bytes(piece) for piece in layout.pieces())


def test_a_laid_out_file_holds_every_array_attribute_and_byte():
    layout, data = laid_out(ARRAYS)
    assert len(data) == layout.size
    assert check_h5_file(data) == []  # contiguous, all data in the file, no filters
    with h5py.File(io.BytesIO(data), "r") as handle:
        group = handle["layers/dense/vars"]
        assert group.attrs["name"] == "dense"
        assert sorted(group) == sorted(ARRAYS)
        for name, array in ARRAYS.items():
            assert group[name].dtype == array.dtype and group[name].shape == array.shape
            assert group[name][()].tobytes() == array.tobytes()
            assert group[name].attrs["path"] == f"dense/{name}"


def test_the_arrays_are_streamed_from_their_own_memory_not_copied():
    big = ARRAYS["big"]
    layout, _ = laid_out({"big": big})
    pieces = list(layout.pieces())
    assert max(len(piece) for piece in pieces) <= CHUNK
    streamed = [piece for piece in pieces if isinstance(piece.obj, np.ndarray)]
    assert all(np.shares_memory(piece.obj, big) for piece in streamed)
    assert sum(len(piece) for piece in streamed) == big.nbytes  # every byte, from its memory


def test_what_h5py_holds_in_memory_is_the_metadata_only():
    layout, data = laid_out({"big": ARRAYS["big"]})
    held = sum(len(extent) for _, extent in layout._file.extents())
    assert len(data) > ARRAYS["big"].nbytes > 100 * held


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 5000), st.binary(min_size=1, max_size=300), st.booleans()),
        max_size=25,
    ),
    st.integers(0, 6000),
)
def test_the_metadata_file_reads_back_what_a_real_file_would(operations, truncate_at):
    ours, reference = _MetadataFile(), io.BytesIO()
    for offset, data, truncate in operations:
        for handle in (ours, reference):
            handle.seek(offset)
            handle.write(data)
        if truncate:  # HDF5 truncates to its end of allocation, up or down
            ours.truncate(truncate_at)
            reference.truncate(truncate_at)
            if truncate_at > len(reference.getvalue()):
                reference.seek(truncate_at - 1)  # BytesIO does not grow on truncate
                reference.write(b"\0")
    expected = reference.getvalue()
    assert ours.seek(0, io.SEEK_END) == len(expected)
    ours.seek(0)
    assert ours.read(len(expected) + 10) == expected
    extents = ours.extents()
    assert all(a + len(x) < b for (a, x), (b, _) in itertools.pairwise(extents))


def test_write_pieces_durably_hashes_exactly_the_bytes_it_wrote(tmp_path):
    pieces = [b"head", memoryview(ARRAYS["big"]).cast("B"), b"", bytes(3)]
    entry = write_pieces_durably(tmp_path / "f.bin", pieces)
    on_disk = (tmp_path / "f.bin").read_bytes()
    assert on_disk == b"".join(bytes(p) for p in pieces)
    assert entry.size == len(on_disk)
    assert entry.sha256 == hashlib.sha256(on_disk).hexdigest() == sha256_of(tmp_path / "f.bin")


def test_each_piece_is_handed_to_the_disk_as_it_is_written(tmp_path, monkeypatch):
    started = []
    real = durable_module.start_writeback

    def spy(fd, offset, length):
        started.append((offset, length, os.fstat(fd).st_size))
        real(fd, offset, length)

    monkeypatch.setattr(durable_module, "start_writeback", spy)
    pieces = [b"head", memoryview(ARRAYS["big"]).cast("B"), bytes(3)]
    entry = write_pieces_durably(tmp_path / "f.bin", pieces)
    # One range per piece, in order, tiling the file, each once its bytes are in the file.
    assert [(offset, length) for offset, length, _ in started] == [
        (0, 4),
        (4, len(pieces[1])),
        (4 + len(pieces[1]), 3),
    ]
    assert all(size >= offset + length for offset, length, size in started)
    assert sum(length for _, length, _ in started) == entry.size
    if sys.platform.startswith("linux"):  # the hint is really given there, not a no-op
        from checkpoints.io import writeback

        assert writeback._SYNC_FILE_RANGE is not None


def test_commit_takes_the_hash_taken_while_writing_without_reading_the_file(tmp_path, monkeypatch):
    staging = staging_dir(tmp_path, 5)
    entry = write_pieces_durably(staging / "weights.bin", [b"weights"])
    (staging / "config.yaml").write_text("a: 1\n")  # written otherwise: hashed at commit
    hashed = []
    real = durable_module.sha256_of
    monkeypatch.setattr(durable_module, "sha256_of", lambda p: hashed.append(p.name) or real(p))
    commit_checkpoint(staging, tmp_path / "step-00000005", {"global_step": 5})
    files = read_manifest(tmp_path / "step-00000005")["files"]
    assert hashed == ["config.yaml"]
    assert files["weights.bin"] == {"size": entry.size, "sha256": entry.sha256}
    assert verify(tmp_path / "step-00000005").valid


def test_a_file_changed_after_it_was_written_is_hashed_again(tmp_path):
    staging = staging_dir(tmp_path, 5)
    path = staging / "weights.bin"
    write_pieces_durably(path, [b"weights"])
    path.unlink()
    path.write_bytes(b"other bytes")  # a new file: another inode, size and mtime
    commit_checkpoint(staging, tmp_path / "step-00000005", {"global_step": 5})
    files = read_manifest(tmp_path / "step-00000005")["files"]
    assert files["weights.bin"]["sha256"] == hashlib.sha256(b"other bytes").hexdigest()
    assert verify(tmp_path / "step-00000005").valid


def test_a_write_the_disk_refuses_is_a_plain_oserror_and_no_crash(tmp_path):
    # HDF5 crashes when its own write fails (checkpoints.state); here only Python
    # writes: under a file size limit the save fails with EFBIG, and the process lives on.
    code = (
        "import resource, sys, numpy as np\n"
        "from pathlib import Path\n"
        "from checkpoints.durable import write_pieces_durably\n"
        "from checkpoints.io.h5_layout import H5Layout\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))\n"
        "with H5Layout() as layout:\n"
        "    layout.add(layout.root, 'big', np.ones(1_000_000))\n"
        "try:\n"
        f"    write_pieces_durably(Path({str(tmp_path / 'x.h5')!r}), layout.pieces())\n"
        "except OSError as error:\n"
        "    print('refused', error.errno)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "refused 27"  # EFBIG, as a full disk's ENOSPC would be


# --------------------------------------------------------------------------- TensorFlow


@pytest.fixture(scope="module")
def trained():
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(8), keras.layers.Dropout(0.5), keras.layers.Dense(3)]
    )
    optimizer = keras.optimizers.Adam(1e-2)
    x, y = tf.random.stateless_normal((16, 4), (1, 2)), tf.zeros((16,), tf.int32)

    def step():
        with tf.GradientTape() as tape:
            loss = keras.losses.sparse_categorical_crossentropy(y, model(x, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))

    step()
    return model, optimizer, step


def test_a_snapshot_writes_the_values_of_when_it_was_taken(trained, tmp_path):
    from checkpoints.manifest import checkpoint_arrays
    from checkpoints.state import snapshot_state, write_state

    model, optimizer, step = trained
    (tmp_path / "now").mkdir()
    write_state(tmp_path / "now", model, optimizer, {}, "a: 1\n")
    write = snapshot_state(model, optimizer, {}, "a: 1\n")
    for _ in range(3):
        step()  # the live variables move on; the snapshot must not
    (tmp_path / "later").mkdir()
    write(tmp_path / "later")
    now, later = checkpoint_arrays(tmp_path / "now"), checkpoint_arrays(tmp_path / "later")
    assert now.keys() == later.keys() and len(now) > 5
    assert all(np.array_equal(now[key], later[key]) for key in now)
    assert not np.array_equal(model.weights[0].numpy(), now["model.weights.h5/layers/dense/vars/0"])


def test_plain_keras_loads_the_streamed_weights_file(trained, tmp_path):
    import keras

    from checkpoints.state import save_weights

    model, _, _ = trained
    save_weights(model, tmp_path / "ours.weights.h5")
    twin = keras.models.clone_model(model)
    twin.load_weights(tmp_path / "ours.weights.h5")
    for ours, theirs in zip(model.weights, twin.weights, strict=True):
        assert np.array_equal(ours.numpy(), theirs.numpy())
