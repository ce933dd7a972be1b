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
from typing import Any

from ..core._errors import StoreInUseError

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
#: Stores the process this one was forked from had open: directory -> that process's pid.
_held_by_parent: dict[Path, int] = {}


def _forget_after_fork() -> None:
    """In a forked child: the parent's stores are not this process's.

    The child inherited the parent's open count (so ``open`` would go on as if it held the
    store, and hang in the in-process server the parent's threads ran) and the descriptors
    (closing them does not release the parent's lock: the open file description is shared).
    """
    global _held_guard
    _held_guard = threading.Lock()  # another thread of the parent may have held it
    parent = os.getppid()
    for directory, (descriptor, _) in _held.items():
        _held_by_parent[directory] = parent
        with contextlib.suppress(OSError):
            os.close(descriptor)
    _held.clear()


def _drop_parent_servers_after_fork() -> None:
    """In a forked child: do not stop the parent's in-process tiled servers at exit.

    tiled's ``Context.from_app`` registers its starlette ``TestClient.__exit__`` with
    ``threading``'s exit hooks; in a child that would wait forever for the server's event-loop
    thread, which did not survive the fork (a multiprocessing 'fork' worker then never exits).
    """
    hooks = getattr(threading, "_threading_atexits", None)  # CPython's list, used by tiled
    if isinstance(hooks, list):  # of functools.partial(client.__exit__)

        def of_test_client(hook: Any) -> bool:
            bound = getattr(hook, "func", hook)
            return type(getattr(bound, "__self__", None)).__name__ == "TestClient"

        hooks[:] = [hook for hook in hooks if not of_test_client(hook)]


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)
    os.register_at_fork(after_in_child=_drop_parent_servers_after_fork)


def hold_embedded_store(directory: Path) -> None:
    """Claim the embedded store in ``directory`` for this process (again, if it has it).

    An embedded store's tables are a DuckDB file, which admits one process at a time; a second
    process would fail later with DuckDB's own lock error, in the middle of a save. It fails
    here instead, naming the process that has the store and what to do.

    Raises
    ------
    StoreInUseError
        If another process has the store open, or this process was forked from the one
        that has it (a forked child gets the error at once).
    """
    with _held_guard:
        if directory in _held:
            _held[directory][1] += 1
            return
        descriptor = os.open(directory / OPEN_LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)  # never waits
        except BlockingIOError:
            holder = os.pread(descriptor, 4096, 0).decode(errors="replace").strip() or "?"
            os.close(descriptor)
            if directory in _held_by_parent:
                raise StoreInUseError(
                    f"the embedded store {directory} is open in process "
                    f"{_held_by_parent[directory]}, from which this process ({os.getpid()}) was "
                    "forked; a forked child cannot use its parent's in-process store (its server "
                    "runs in the parent's threads, and its tables are a DuckDB file that admits "
                    "one process). Open it through its local server in every process (the "
                    "default: AnalysisStore.open(DIRECTORY) without local_server=False), or "
                    "start workers with multiprocessing's 'spawn' or 'forkserver' method"
                ) from None
            raise StoreInUseError(
                f"the embedded store {directory} is open in another process ({holder}); an "
                "embedded store opened in a process (local_server=False, $BAS_LOCAL_SERVER=0) "
                "or by `bas serve` is that process's alone (its tables are a DuckDB file). "
                "Close it there, or open it through its local server everywhere (the default), "
                f"which several processes share; `bas stop-server --store {directory}` stops "
                "a local server"
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
