"""Small file-lifecycle helpers shared by the writers and handlers."""

from __future__ import annotations

import contextlib
import errno
import math
import os
import stat
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, Self

from ._errors import FileCollisionError, StorageFullError
from ._values import is_dataframe

#: ``errno`` values that mean "no room": the disk, the quota, or the largest file allowed.
STORAGE_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})

_NEW_FILE_FLAGS = (
    os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
)


def fsync_path(path: str | os.PathLike[str]) -> None:
    """Flush a closed file's data to stable storage (a derived run is as precious as raw data)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def inside_root(path: Path, root: Path) -> bool:
    """Whether ``path`` is strictly under ``root`` with no symlink on the way.

    ``root`` must be resolved (no symlink in it): a directory between them that is a symlink
    makes ``path``'s real parent differ from its written one.
    """
    if path == root or ".." in path.parts or not path.is_relative_to(root):
        return False
    return os.path.realpath(path.parent) == str(path.parent)


def remove_empty_directories(directories: Iterable[Path], root: Path) -> list[Path]:
    """Remove each directory, then its parents, while they are empty: the one directory cleaner.

    Never ``root`` nor anything outside it, never through a symlink (``root`` must be resolved,
    see :func:`inside_root`), deepest first so a directory emptied by its child's removal goes
    too. A directory that is not empty, gone or not a directory stops the walk up from it.

    Parameters
    ----------
    directories : iterable of Path
        The directories to start from.
    root : Path
        The resolved directory under which directories may be removed.

    Returns
    -------
    list of Path
        The directories removed, in the order they were.
    """
    removed: list[Path] = []
    for directory in sorted(set(directories), key=lambda p: (-len(p.parts), str(p))):
        for candidate in (directory, *directory.parents):
            if not inside_root(candidate, root):
                break
            try:
                if not stat.S_ISDIR(candidate.lstat().st_mode):
                    break
                candidate.rmdir()
            except OSError:  # not empty, or gone
                break
            removed.append(candidate)
    return removed


class ClosingContext:
    """Context-manager behaviour for anything with an idempotent ``close()``."""

    def close(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class ReadingHandle(ClosingContext):
    """A handler's file handle, closed when the handler is collected.

    ``event_model.Filler`` caches handlers and never closes them; without this their files would
    stay open until interpreter exit.
    """

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # nothing useful can be done during collection
            self.close()


def frames_per_chunk(
    itemsize: int, frame_shape: tuple[int, ...], target_bytes: int = 1 << 20
) -> int:
    """How many frames make a chunk of about ``target_bytes`` (at least one).

    A zero-length axis is counted as one, as it is in the chunk shape itself.
    """
    chunk_frame_bytes = itemsize * math.prod(max(1, n) for n in frame_shape)
    return max(1, target_bytes // chunk_frame_bytes)


def create_new_file(path: str | os.PathLike[str]) -> int:
    """Create ``path`` for reading and writing and return its descriptor.

    Exclusive (``O_EXCL``: an existing file, or a symbolic link planted at the name, is
    never opened), so no file is ever overwritten.

    Raises
    ------
    FileCollisionError
        If something already exists at ``path``.
    """
    try:
        return os.open(path, _NEW_FILE_FLAGS, 0o666)
    except FileExistsError:
        raise FileCollisionError(
            f"{os.fspath(path)}: file exists already; files are never overwritten"
        ) from None


def open_new_file(path: str | os.PathLike[str]) -> BinaryIO:
    """:func:`create_new_file` as a buffered binary file object (named by ``path``)."""
    return open(path, "wb", opener=lambda name, flags: create_new_file(name))


def is_storage_full(error: BaseException) -> bool:
    """Whether ``error`` says the disk, the quota or the allowed file size ran out."""
    return isinstance(error, OSError) and error.errno in STORAGE_FULL_ERRNOS


def _size(n: float) -> str:
    """``n`` bytes for people: ``932 B``, ``3.6 MB``."""
    units = ["B", "kB", "MB", "GB", "TB"]
    while n >= 1000 and len(units) > 1:
        n, units = n / 1000, units[1:]
    return f"{n:.0f} B" if units[0] == "B" else f"{n:.1f} {units[0]}"


def storage_full_error(
    error: OSError, path: str | os.PathLike[str], root: Path | None, bytes_needed: int | None
) -> StorageFullError:
    """The typed error for a disk, quota or file-size limit met while writing ``path``."""
    reason = {
        errno.EDQUOT: "the disk quota is exceeded",
        errno.EFBIG: "the file would be larger than allowed (the process's file size limit, "
        "RLIMIT_FSIZE, or the file system's)",
    }.get(error.errno or 0, "the file system is full")
    free = ""
    if root is not None:
        with contextlib.suppress(OSError):
            stat = os.statvfs(root)
            free = f" ({_size(stat.f_bavail * stat.f_frsize)} was free under {root} then)"
    needed = "" if bytes_needed is None else f"; the save's files need about {_size(bytes_needed)}"
    return StorageFullError(
        f"{os.fspath(path)}: {reason} ({error.strerror or error}){needed}{free}. Every file "
        "of the save was closed and removed; nothing was stored. Make room and save again",
        errno=error.errno or errno.ENOSPC,
        filename=os.fspath(path),
        bytes_needed=bytes_needed,
    )


def value_bytes(value: Any) -> int:
    """The raw size of a value written to a file (arrays and DataFrames; 8 for the rest)."""
    if is_dataframe(value):
        return int(value.memory_usage(index=True).sum())
    return int(getattr(value, "nbytes", 8))


class GuardedFile:
    """A file for a C library that cannot survive a failed write (HDF5 through h5py's
    ``fileobj`` driver).

    After a failed write, HDF5 1.14 is left in a state where closing the file, or collecting
    its objects, crashes the process (verified: a full disk during ``h5py`` writes ends in a
    segmentation fault). So the library is never told: the first ``OSError`` of a write,
    truncate or fsync is kept in :attr:`error`, and what the library writes after it is kept in
    memory (and read back from there), so the library finishes and closes normally. The
    caller then raises :attr:`error` (see :meth:`check`) and discards the file. The writer
    stops appending at the first error, so what is kept in memory is the rest of one write
    and what the library flushes while closing.

    Parameters
    ----------
    descriptor : int
        An open descriptor (read and write), owned from now on by this object.
    name : str
        The path, for messages.
    """

    def __init__(self, descriptor: int, name: str) -> None:
        self._fd: int | None = descriptor
        self.name = name
        self._pos = 0
        self._size = os.fstat(descriptor).st_size
        self.error: OSError | None = None
        self._kept: dict[int, bytes] = {}  # offset -> bytes written after the error

    @classmethod
    def create(cls, path: str | os.PathLike[str]) -> GuardedFile:
        """Create ``path`` exclusively (see :func:`create_new_file`)."""
        return cls(create_new_file(path), os.fspath(path))

    @classmethod
    def open_existing(cls, path: str | os.PathLike[str]) -> GuardedFile:
        """Open an existing regular file for update, not following a symbolic link."""
        flags = os.O_RDWR | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        return cls(os.open(path, flags), os.fspath(path))

    # -- the file object h5py's fileobj driver uses ------------------------------------------

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._pos, os.SEEK_END: self._size}[whence]
        self._pos = base + offset
        return self._pos

    def tell(self) -> int:
        return self._pos

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        # never raise: a failed write callback breaks the library's state
        if self.error is None and self._fd is None:
            self.error = OSError(errno.EBADF, f"{self.name} was closed before the library")
        if self.error is None and self._fd is not None:
            done = 0
            try:
                while done < len(view):
                    done += os.pwrite(self._fd, view[done:], self._pos + done)
            except OSError as error:
                self.error = error
        if self.error is not None:
            self._kept[self._pos] = bytes(view)
        self._pos += len(view)
        self._size = max(self._size, self._pos)
        return len(view)

    def read(self, size: int = -1) -> bytes:
        size = max(0, self._size - self._pos) if size < 0 else size
        data = bytearray()
        if self._fd is not None:
            with contextlib.suppress(OSError):  # never raise (see write); zeros instead
                data = bytearray(os.pread(self._fd, size, self._pos))
        data.extend(bytes(size - len(data)))  # beyond the end reads as zeros, as in HDF5's sec2
        for offset, kept in self._kept.items():  # what was written after the error
            start, stop = max(offset, self._pos), min(offset + len(kept), self._pos + size)
            if start < stop:
                data[start - self._pos : stop - self._pos] = kept[start - offset : stop - offset]
        self._pos += size
        return bytes(data)

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = self.read(len(view))
        view[: len(data)] = data
        return len(data)

    def truncate(self, size: int | None = None) -> int:
        size = self._pos if size is None else size
        if self.error is None and self._fd is not None:
            try:
                os.ftruncate(self._fd, size)
            except OSError as error:
                self.error = error
        self._size = size
        return size

    def flush(self) -> None:
        """Nothing to do: every write goes straight to the descriptor."""

    # -- ours --------------------------------------------------------------------------------

    def check(self) -> None:
        """Raise the first ``OSError`` met, if any."""
        if self.error is not None:
            raise self.error

    def close(self) -> None:
        """fsync (unless an error was met) and close the descriptor; idempotent."""
        if self._fd is None:
            return
        descriptor, self._fd = self._fd, None
        try:
            if self.error is None:
                os.fsync(descriptor)
        except OSError as error:
            self.error = error
        finally:
            os.close(descriptor)
            self._kept.clear()
