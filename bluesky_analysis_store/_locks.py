"""Cross-process locks that make "save this lineage unless it is already saved" atomic."""

from __future__ import annotations

import contextlib
import fcntl
import os
import struct
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

from ._errors import AnalysisStoreError

#: The lock file under a store's root (fsck leaves it alone); it stays empty.
LOCK_FILE = ".bas-lock"


def _lock_byte(descriptor: int, offset: int) -> None:
    """Wait for an exclusive lock on one byte of the file (the file need not be that long).

    Open-file-description locks (Linux): held per ``open()``, so threads of one process exclude
    each other too, unlike classic POSIX record locks; released when the descriptor is closed
    or the holder dies. Elsewhere the whole file is locked with ``flock`` (every lineage then
    waits for every other).
    """
    command = getattr(fcntl, "F_OFD_SETLKW", None)
    if command is None:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        return
    # struct flock {short l_type, l_whence; off_t l_start, l_len; pid_t l_pid (0 for OFD)}
    request = struct.pack("hhqqi4x", fcntl.F_WRLCK, os.SEEK_SET, offset, 1, 0)
    fcntl.fcntl(descriptor, command, request)


def create_lock_file(root: Path) -> None:
    """Create the (empty) lock file if it is missing and ``root`` is writable; else nothing."""
    with contextlib.suppress(OSError):
        os.close(os.open(root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644))


@contextlib.contextmanager
def lineage_lock(root: Path, lineage_hash: str) -> Iterator[None]:
    """Hold an exclusive lock for ``lineage_hash`` among every process and thread sharing
    ``root``.

    One file, one byte per lineage (the hash's first 60 bits give the offset): saves of
    different lineages never wait for each other. The kernel releases the lock if the holder
    dies; network file systems with POSIX locks (NFSv4) carry it between hosts.
    """
    descriptor = os.open(root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        _lock_byte(descriptor, int(lineage_hash[:15], 16))
        yield
    finally:
        os.close(descriptor)  # closing releases the lock


#: The lock file of an embedded store, held by the one process that has it open.
OPEN_LOCK_FILE = ".bas-open.lock"

_held: dict[Path, list[int]] = {}  # directory -> [descriptor, how many opens in this process]
_held_guard = threading.Lock()


def hold_embedded_store(directory: Path) -> None:
    """Claim the embedded store in ``directory`` for this process (again, if it has it).

    An embedded store's tables are a DuckDB file, which admits one process at a time; a second
    process would fail later with DuckDB's own lock error, in the middle of a save. It fails
    here instead, naming the process that has the store and what to do.

    Raises
    ------
    AnalysisStoreError
        If another process has the store open.
    """
    with _held_guard:
        if directory in _held:
            _held[directory][1] += 1
            return
        descriptor = os.open(directory / OPEN_LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(descriptor, 4096, 0).decode(errors="replace").strip() or "?"
            os.close(descriptor)
            raise AnalysisStoreError(
                f"the embedded store {directory} is open in another process ({holder}); an "
                "embedded store serves one process at a time (its tables are a DuckDB file). "
                f"Close it there, or serve it (`bas serve {directory}`) and open the server's "
                "http:// address from every process"
            ) from None
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, f"pid {os.getpid()}: {' '.join(sys.argv)[:200]}".encode(), 0)
        _held[directory] = [descriptor, 1]


def release_embedded_store(directory: Path) -> None:
    """Undo one :func:`hold_embedded_store`; the last one lets other processes open it."""
    with _held_guard:
        entry = _held.get(directory)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] == 0:
            del _held[directory]
            os.close(entry[0])  # releases the lock
