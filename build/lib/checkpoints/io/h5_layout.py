"""HDF5 files laid out by h5py in memory, their data written by Python straight from the arrays.

A checkpoint's two ``.h5`` files are mostly array data. Building them in a
``BytesIO`` (the old way, see ``checkpoints.state`` for why not on disk
by HDF5) copies every array into the buffer, and the buffer is then written
and re-read to hash it. Here h5py builds only the file's *metadata*:
every dataset is created contiguous, its space allocated at creation and
never filled (``ALLOC_TIME_EARLY``, ``FILL_TIME_NEVER``), so HDF5 writes
nothing but metadata into the :class:`_MetadataFile` it is handed (a sparse,
in-memory file: a few KB per dataset). Each dataset's offset is then known
(``get_offset``), and :meth:`H5Layout.pieces` yields the whole file in order:
metadata bytes, each array's own buffer at its offset, zeros in between.
``checkpoints.durable.write_pieces_durably`` writes and hashes them in
one pass. The result is an ordinary HDF5 file: h5py and Keras read back
every group, dataset, attribute and byte, and ``checkpoints.io.h5`` finds
nothing to refuse (``tests/test_checkpoint_io.py``, ``tests/test_run_dir.py``).

As with a BytesIO, no HDF5 write can fail (it is memory), so a full disk is
a plain ``OSError`` of Python's own write, never HDF5's crash on a failed
write. No TensorFlow here; the arrays are anything with the buffer protocol
that NumPy can view without copying (``numpy.asarray``).
"""

from __future__ import annotations

import bisect
import io
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

CHUNK = 8 << 20  # bytes handed to one write and one hash update: large, and bounded


class _MetadataFile(io.RawIOBase):
    """A file-like object for h5py's file-object driver that keeps what is written as
    disjoint extents (offset -> bytes) and reads zeros elsewhere: the size of the
    file costs nothing, only the bytes HDF5 writes (its metadata) are held."""

    def __init__(self) -> None:
        super().__init__()
        self._starts: list[int] = []  # sorted, extents disjoint and not touching
        self._extents: dict[int, bytearray] = {}
        self._position = 0
        self._size = 0

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._size}[whence]
        self._position = base + offset
        return self._position

    def tell(self) -> int:
        return self._position

    def truncate(self, size: int | None = None) -> int:
        size = self._position if size is None else size
        for start in [s for s in self._starts if s >= size]:
            self._starts.remove(start)
            del self._extents[start]
        if self._starts and self._starts[-1] + len(self._extents[self._starts[-1]]) > size:
            del self._extents[self._starts[-1]][size - self._starts[-1] :]
        self._size = size
        return size

    def write(self, data: Any) -> int:
        data = memoryview(data).cast("B")
        start, end = self._position, self._position + len(data)
        # The extents that overlap or touch [start, end) become one, the new bytes on top.
        first = bisect.bisect_right(self._starts, start) - 1
        if first < 0 or self._end(self._starts[first]) < start:
            first += 1
        last = bisect.bisect_right(self._starts, end)
        touched = self._starts[first:last]
        if len(touched) == 1 and touched[0] <= start:
            # Within or extending one extent: in place. (HDF5 writes its metadata in
            # many small pieces, mostly at the end of the last extent; merging into a
            # new bytearray each time copied the whole extent per write.)
            extent = self._extents[touched[0]]
            extent[start - touched[0] : end - touched[0]] = data  # longer: it grows
            self._position = end
            self._size = max(self._size, end)
            return len(data)
        low = min([start, *touched])
        high = max([end, *(self._end(s) for s in touched)])
        merged = bytearray(high - low)
        for extent_start in touched:
            extent = self._extents.pop(extent_start)
            merged[extent_start - low : extent_start - low + len(extent)] = extent
        merged[start - low : end - low] = data
        self._starts[first:last] = [low]
        self._extents[low] = merged
        self._position = end
        self._size = max(self._size, end)
        return len(data)

    def _end(self, extent_start: int) -> int:
        return extent_start + len(self._extents[extent_start])

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        start = self._position
        count = max(0, min(len(view), self._size - start))
        view[:count] = bytes(count)
        for extent_start in self._starts:
            extent = self._extents[extent_start]
            low, high = max(start, extent_start), min(start + count, extent_start + len(extent))
            if low < high:
                view[low - start : high - start] = extent[low - extent_start : high - extent_start]
        self._position += count
        return count

    def extents(self) -> list[tuple[int, bytearray]]:
        return [(start, self._extents[start]) for start in self._starts]

    @property
    def size(self) -> int:
        return self._size


class H5Layout:
    """An HDF5 file being laid out: groups, attributes and datasets with h5py, data later.

    ``with H5Layout() as layout:`` then ``layout.root`` is the h5py ``File``
    (create groups, set attributes) and :meth:`add` creates a dataset for an
    array without writing it. After the ``with`` block, :meth:`pieces` yields
    the file's bytes in order and :attr:`size` is its length.
    """

    def __init__(self) -> None:
        import h5py

        self._file = _MetadataFile()
        self.root = h5py.File(self._file, "w")
        self._arrays: list[tuple[Any, np.ndarray]] = []  # (dataset, array) until closed
        self._placed: list[tuple[int, np.ndarray]] = []  # (offset, array) once closed

    def __enter__(self) -> H5Layout:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def add(self, group: Any, name: str, array: Any, attrs: Mapping[str, Any] | None = None) -> Any:
        """Create dataset ``name`` in ``group`` for ``array`` (its shape and dtype); the
        array is held, not copied, and must not change until the file is written."""
        import h5py

        array = np.asarray(array)
        if not array.flags.c_contiguous:  # (never for a tensor) the bytes must be in order
            array = np.ascontiguousarray(array)
        dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
        dataset = group.create_dataset(
            name, shape=array.shape, dtype=array.dtype, dcpl=dcpl, fill_time="never"
        )
        for key, value in (attrs or {}).items():
            dataset.attrs[key] = value
        if dataset.id.get_offset() is None:  # h5py allocates a scalar late: written here
            dataset[()] = array
        else:
            self._arrays.append((dataset, array))
        return dataset

    def close(self) -> None:
        """Finish the metadata: every dataset's offset is fixed from here on."""
        if not self.root:
            return
        for dataset, array in self._arrays:
            if array.nbytes:
                self._placed.append((dataset.id.get_offset(), array))
        self._arrays.clear()
        self.root.close()
        self._placed.sort(key=lambda placed: placed[0])

    @property
    def size(self) -> int:
        return self._file.size

    def pieces(self) -> Iterator[memoryview]:
        """The file's bytes, in order, as buffers of at most :data:`CHUNK` bytes: the
        metadata HDF5 wrote, each array's own memory, zeros in the gaps between them."""
        pieces = [(start, memoryview(extent)) for start, extent in self._file.extents()]
        pieces += [(offset, memoryview(array).cast("B")) for offset, array in self._placed]
        pieces.sort(key=lambda piece: piece[0])
        position = 0
        for start, data in pieces:
            if start < position:  # HDF5 gave one byte two uses: a bug, never a silent file
                raise RuntimeError(f"HDF5 layout overlaps at byte {start}")
            if start > position:
                yield memoryview(bytes(start - position))
            for low in range(0, len(data), CHUNK):
                yield data[low : low + CHUNK]
            position = start + len(data)
        if position < self.size:
            yield memoryview(bytes(self.size - position))
