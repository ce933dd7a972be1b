"""HDF5 array stacks: one file per (stream, key) per run, one frame appended per value."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import h5py
import numpy as np

from ..core._errors import UnsupportedValueError, WriterClosedError
from ..core._files import ClosingContext, GuardedFile, ReadingHandle, frames_per_chunk
from ..core._values import ValueDescription, describe_numeric
from ._pairs import WriterHandlerPair

COMPRESSIONS = (None, "gzip", "lzf")


class HDF5Writer(ClosingContext):
    """Append equally shaped arrays as frames of one chunked, resizable HDF5 dataset.

    Parameters
    ----------
    resource_path : str
        The file to create; it must not exist (no silent overwrite).
    dataset : str
        Path of the dataset inside the file.
    chunk_shape : list of int
        ``[frames_per_chunk]``: how many frames share one HDF5 chunk at most (a run of fewer
        frames is stored in one chunk of exactly its frames).
    compression : {None, "gzip", "lzf"}
        Off by default: gzip on random data runs at ~31 MB/s, far below the disk.

    Notes
    -----
    HDF5 writes through a :class:`~bluesky_analysis_store.core._files.GuardedFile` (h5py's
    ``fileobj`` driver, as fast here as the native one): a full disk is never reported to
    HDF5, whose state a failed write breaks (closing the file then crashes the process); the
    writer raises the ``OSError`` instead, and closing releases the file all the same.

    The dataset is created at the first write, which holds a whole chunk of frames or, for a
    run of fewer frames, all of them: HDF5 stores whole chunks, so a chunk sized for more
    frames than a small run has would fill its file with zeros (1 MiB for 10 frames).
    """

    def __init__(
        self,
        resource_path: str,
        *,
        dataset: str = "/data",
        chunk_shape: list[int] | None = None,
        compression: str | None = None,
    ) -> None:
        if compression not in COMPRESSIONS:
            raise UnsupportedValueError(
                f"compression={compression!r} is not supported; accepted: {list(COMPRESSIONS)}"
            )
        self._path = resource_path
        self._dataset_path = dataset
        self._frames_per_chunk = chunk_shape[0] if chunk_shape else None
        self._compression = compression
        self._raw = GuardedFile.create(resource_path)
        try:
            self._file: h5py.File | None = h5py.File(self._raw, "w", libver="latest")
        except BaseException:
            self._raw.close()
            raise
        self._dataset: h5py.Dataset | None = None  # created by the first write
        self._frame: tuple[tuple[int, ...], np.dtype, int] = ((), np.dtype("f8"), 1)
        self._count = 0
        self._pending: list[np.ndarray] = []  # small frames, written one chunk at a time
        self._written = 0

    def _create_dataset(self, block: np.ndarray) -> h5py.Dataset:
        """The dataset, chunked by the first block written: a full chunk, or the whole run."""
        assert self._file is not None
        frame_shape = block.shape[1:]
        # A zero-length axis cannot be chunked at 0 and may not exceed a fixed maxshape of 0.
        chunks = (len(block), *(max(1, n) for n in frame_shape))
        maxshape = (None, *(n if n else None for n in frame_shape))
        return self._file.create_dataset(
            self._dataset_path,
            shape=(0, *frame_shape),
            maxshape=maxshape,
            dtype=block.dtype,
            chunks=chunks,
            compression=self._compression,
        )

    def __call__(self, value: Any) -> dict[str, Any]:
        if self._file is None:
            raise WriterClosedError(f"writer for {self._path} is closed")
        self._raw.check()  # after a full disk nothing more is appended
        frame = np.asarray(value)
        if self._count == 0:
            # a dtype HDF5 cannot store is refused at the first frame, not when the dataset
            # is created (the same check h5py's create_dataset makes)
            h5py.h5t.py_create(frame.dtype, logical=True)
            per_chunk = self._frames_per_chunk or frames_per_chunk(frame.itemsize, frame.shape)
            self._frame = (frame.shape, frame.dtype, per_chunk)
        frame_shape, dtype, per_chunk = self._frame
        if frame.shape != frame_shape or frame.dtype != dtype:
            raise UnsupportedValueError(
                f"frame {self._count} has shape {frame.shape} and dtype {frame.dtype}; "
                f"{self._path} holds shape {frame_shape} and dtype {dtype}"
            )
        if per_chunk == 1:  # a big frame: write it as it comes, no copy
            self._write_block(frame[np.newaxis])
        else:  # small frames: one HDF5 write per chunk instead of one per frame
            self._pending.append(np.array(frame, copy=True))
            if len(self._pending) == per_chunk:
                self._flush()
        self._raw.check()
        self._count += 1
        return {"point_number": self._count - 1}

    def _write_block(self, block: np.ndarray) -> None:
        if self._dataset is None:
            self._dataset = self._create_dataset(block)
        start = self._written
        stop = start + len(block)
        if stop > self._dataset.shape[0]:
            # Grow geometrically: one resize per frame costs more than the write itself.
            self._dataset.resize(max(2 * self._dataset.shape[0], stop), axis=0)
        self._dataset[start:stop] = block
        self._written = stop

    def _flush(self) -> None:
        if not self._pending:
            return
        first = self._pending[0]
        # np.stack would turn big-endian frames native: fill a block of the stored dtype
        block = np.empty((len(self._pending), *first.shape), dtype=first.dtype)
        for i, frame in enumerate(self._pending):
            block[i] = frame
        self._pending = []
        self._write_block(block)

    def close(self) -> None:
        """Write what is pending, close and fsync the file; raise the ``OSError`` met while
        writing, if any (the file is released either way)."""
        if self._file is None:
            return
        file = self._file
        try:
            if self._raw.error is None:
                self._flush()  # may create the dataset: the file is still open
                if self._dataset is not None:
                    self._dataset.resize(self._written, axis=0)
        finally:
            self._file = None
            try:
                file.close()
            finally:
                self._raw.close()
        self._raw.check()


class HDF5Handler(ReadingHandle):
    """Read one frame of an HDF5 stack written by :class:`HDF5Writer`."""

    def __init__(
        self,
        resource_path: str,
        *,
        dataset: str = "/data",
        chunk_shape: list[int] | None = None,
        compression: str | None = None,
    ) -> None:
        self._file: h5py.File | None = h5py.File(resource_path, "r")
        self._dataset = self._file[dataset]

    def __call__(self, *, point_number: int) -> np.ndarray:
        # A one-frame slice keeps the stored dtype (big-endian too); [0, ...] stays an array,
        # where dataset[i] on a 0-d frame would give a native-order numpy scalar.
        return np.asarray(self._dataset[point_number : point_number + 1])[0, ...]

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def hdf5_resource_kwargs(value: Any, description: ValueDescription) -> dict[str, Any]:
    return {
        "dataset": "/data",
        "chunk_shape": [frames_per_chunk(description.numpy_dtype.itemsize, description.shape)],
        "compression": None,
    }


def annotate_hdf5(path: str, attributes: Mapping[str, str]) -> None:
    """Store ``attributes`` on the file's root group (self-describing files)."""
    raw = GuardedFile.open_existing(path)  # a full disk must not reach HDF5 (see HDF5Writer)
    try:
        with h5py.File(raw, "r+") as f:
            for key, value in attributes.items():
                f.attrs[key] = value
    finally:
        raw.close()
    raw.check()


HDF5_PAIR = WriterHandlerPair(
    spec="BAS_HDF5",
    mimetype="application/x-hdf5",
    writer=HDF5Writer,
    handler=HDF5Handler,
    suffix=".h5",
    describe=describe_numeric,
    resource_kwargs=hdf5_resource_kwargs,
    annotate=annotate_hdf5,
)
