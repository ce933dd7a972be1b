"""TIFF stacks: one multi-page TIFF per (stream, key) per run, one page per 2-D frame."""

from __future__ import annotations

import io
import os
from typing import Any, Literal

import numpy as np
import tifffile

from ..core._errors import UnsupportedValueError, WriterClosedError
from ..core._files import ClosingContext, ReadingHandle, create_new_file
from ..core._values import ValueDescription, describe_array
from ._pairs import WriterHandlerPair

# TIFF sample formats: unsigned/signed integers, IEEE floats and complex; no bool.
TIFF_KINDS = frozenset("iufc")


class _Stream(io.BufferedRandom):
    """The TIFF file for tifffile, without ``fileno()``: numpy's ``tofile`` (which tifffile
    uses when it can) reports a full disk as an OSError without its errno; ``write`` keeps it."""

    def fileno(self) -> int:
        raise io.UnsupportedOperation("fileno")


def _open_stream(path: str) -> _Stream:
    return _Stream(io.FileIO(path, "w+", opener=lambda name, flags: create_new_file(name)))


class TIFFWriter(ClosingContext):
    """Append 2-D frames as pages of one contiguous TIFF series.

    Parameters
    ----------
    resource_path : str
        The file to create; it must not exist.
    byteorder : {"<", ">"}
        The file's byte order, so that big-endian frames come back big-endian.
    """

    def __init__(self, resource_path: str, *, byteorder: Literal["<", ">"] = "<") -> None:
        self._path = resource_path
        self._stream: _Stream | None = _open_stream(resource_path)
        self._error: OSError | None = None  # the first write error (a full disk)
        self._tiff: tifffile.TiffWriter | None = tifffile.TiffWriter(
            self._stream, bigtiff=True, byteorder=byteorder
        )
        self._first: np.ndarray | None = None
        self._count = 0

    def __call__(self, value: Any) -> dict[str, Any]:
        if self._tiff is None:
            raise WriterClosedError(f"writer for {self._path} is closed")
        if self._error is not None:
            raise self._error
        describe_tiff_value(value)
        frame = np.asarray(value)
        if self._first is not None and (
            frame.shape != self._first.shape or frame.dtype != self._first.dtype
        ):
            raise UnsupportedValueError(
                f"frame {self._count} has shape {frame.shape} and dtype {frame.dtype}; "
                f"{self._path} holds shape {self._first.shape} and dtype {self._first.dtype}"
            )
        self._first = frame if self._first is None else self._first
        # contiguous=True keeps every page in one series, which tifffile and tiled read as a stack.
        try:
            self._tiff.write(frame, contiguous=True, photometric="minisblack")
        except OSError as error:
            self._error = error
            raise
        self._count += 1
        return {"point_number": self._count - 1}

    def close(self) -> None:
        """Finish the TIFF, fsync and close; raise the ``OSError`` met while writing, if any
        (the file is released either way)."""
        if self._tiff is None or self._stream is None:
            return
        tiff, stream = self._tiff, self._stream
        self._tiff = self._stream = None
        try:
            if self._error is None:  # after a failed write tifffile's state is not to be trusted
                tiff.close()
                stream.flush()
                os.fsync(stream.raw.fileno())
        except OSError as error:
            self._error = error
        finally:
            try:
                stream.close()
            except OSError as error:
                self._error = self._error or error
        if self._error is not None:
            raise self._error


class TIFFHandler(ReadingHandle):
    """Read one page of a stack written by :class:`TIFFWriter`."""

    def __init__(self, resource_path: str, *, byteorder: Literal["<", ">"] = "<") -> None:
        self._file: tifffile.TiffFile | None = tifffile.TiffFile(resource_path)
        self._byteorder = byteorder

    def __call__(self, *, point_number: int) -> np.ndarray:
        assert self._file is not None
        # tifffile returns native byte order; give back the order that was written.
        page = np.asarray(self._file.pages[point_number].asarray())
        return page.astype(page.dtype.newbyteorder(self._byteorder), copy=False)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def describe_tiff_value(value: Any) -> ValueDescription:
    """A non-empty 2-D numeric array (no bool: TIFF has no boolean sample format)."""
    description = describe_array(value, kinds=TIFF_KINDS)
    if len(description.shape) != 2 or 0 in description.shape:
        raise UnsupportedValueError(
            f"TIFF pages hold non-empty 2-D frames; got shape {description.shape} "
            "(use 'BAS_HDF5' or 'BAS_NPY' for other shapes)"
        )
    return description


def tiff_resource_kwargs(value: Any, description: ValueDescription) -> dict[str, Any]:
    return {"byteorder": ">" if str(description.dtype_numpy).startswith(">") else "<"}


TIFF_PAIR = WriterHandlerPair(
    spec="BAS_TIFF",
    mimetype="image/tiff",
    writer=TIFFWriter,
    handler=TIFFHandler,
    suffix=".tiff",
    describe=describe_tiff_value,
    resource_kwargs=tiff_resource_kwargs,
)
