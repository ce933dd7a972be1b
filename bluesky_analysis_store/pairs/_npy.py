"""NPY stacks: one ``.npy`` file per (stream, key) per run, grown in place frame by frame.

The header is written with room for any leading dimension, so appending a frame only rewrites the
shape in the header; the file is a plain ``.npy`` that ``numpy.load`` (and tiled) read as a stack.
"""

from __future__ import annotations

import os
from typing import IO, Any

import numpy as np
from numpy.lib import format as npy_format

from ..core._errors import UnsupportedValueError, WriterClosedError
from ..core._files import ClosingContext, ReadingHandle, open_new_file
from ..core._values import ValueDescription, describe_numeric
from ._pairs import WriterHandlerPair

_MAGIC = npy_format.magic(1, 0)
_LARGEST_COUNT = 2**63 - 1


def _header(dtype: np.dtype, shape: tuple[int, ...]) -> str:
    return repr({"descr": npy_format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape})


def _header_bytes(dtype: np.dtype, shape: tuple[int, ...], frame_shape: tuple[int, ...]) -> bytes:
    """The header for ``shape``, padded to the length of the largest possible count's header."""
    widest = len(_header(dtype, (_LARGEST_COUNT, *frame_shape)))
    # magic (6) + version (2) + header length (2) + header + "\n", aligned to 64 bytes as numpy does
    total = -(-(len(_MAGIC) + 2 + widest + 1) // 64) * 64
    text = _header(dtype, shape).ljust(total - len(_MAGIC) - 2 - 1) + "\n"
    return _MAGIC + len(text).to_bytes(2, "little") + text.encode("latin1")


class NPYWriter(ClosingContext):
    """Append equally shaped arrays to one growing ``.npy`` file.

    Parameters
    ----------
    resource_path : str
        The file to create; it must not exist.
    """

    def __init__(self, resource_path: str) -> None:
        self._path = resource_path
        self._file: IO[bytes] | None = open_new_file(resource_path)
        self._error: OSError | None = None  # the first write error (a full disk)
        self._dtype: np.dtype | None = None
        self._frame_shape: tuple[int, ...] = ()
        self._count = 0

    def _write_header(self) -> None:
        assert self._file is not None
        assert self._dtype is not None
        self._file.seek(0)
        self._file.write(
            _header_bytes(self._dtype, (self._count, *self._frame_shape), self._frame_shape)
        )
        self._file.seek(0, os.SEEK_END)

    def __call__(self, value: Any) -> dict[str, Any]:
        if self._file is None:
            raise WriterClosedError(f"writer for {self._path} is closed")
        if self._error is not None:
            raise self._error
        frame = np.asarray(value, order="C")  # (np.ascontiguousarray would make 0-d into 1-d)
        if self._dtype is not None and (
            frame.shape != self._frame_shape or frame.dtype != self._dtype
        ):
            raise UnsupportedValueError(
                f"frame {self._count} has shape {frame.shape} and dtype {frame.dtype}; "
                f"{self._path} holds shape {self._frame_shape} and dtype {self._dtype}"
            )
        try:
            if self._dtype is None:
                self._dtype, self._frame_shape = frame.dtype, frame.shape
                self._write_header()
            self._file.write(frame.tobytes())
        except OSError as error:
            self._error = error
            raise
        self._count += 1
        return {"point_number": self._count - 1}

    def close(self) -> None:
        """Write the final header, fsync and close; raise the ``OSError`` met while writing,
        if any (the file is released either way)."""
        if self._file is None:
            return
        file = self._file
        try:
            if self._error is None:
                if self._dtype is not None:
                    self._write_header()
                file.flush()
                os.fsync(file.fileno())
        except OSError as error:
            self._error = error
        finally:
            self._file = None
            try:
                file.close()  # closes the descriptor even when its last flush fails
            except OSError as error:
                self._error = self._error or error
        if self._error is not None:
            raise self._error


class NPYHandler(ReadingHandle):
    """Read one frame of a stack written by :class:`NPYWriter` (memory-mapped)."""

    def __init__(self, resource_path: str) -> None:
        self._stack: np.ndarray | None = np.load(resource_path, mmap_mode="r")

    def __call__(self, *, point_number: int) -> np.ndarray:
        assert self._stack is not None
        return np.array(self._stack[point_number : point_number + 1][0, ...])

    def close(self) -> None:
        self._stack = None


def npy_resource_kwargs(value: Any, description: ValueDescription) -> dict[str, Any]:
    return {}


NPY_PAIR = WriterHandlerPair(
    spec="BAS_NPY",
    mimetype="application/x-npy",
    writer=NPYWriter,
    handler=NPYHandler,
    suffix=".npy",
    describe=describe_numeric,
    resource_kwargs=npy_resource_kwargs,
)
