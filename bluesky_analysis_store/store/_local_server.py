"""The local server of an embedded store: found, started on first open, shared, stopped when idle.

An embedded store's tables are a DuckDB file, which admits one process. So that the IPython
session writing, a notebook reading and saving and ``bas`` in a terminal can use one store
directory at once, every process reaches the store through one server process on the loopback
interface (the store's own app, with the same rules as ``bas serve``), started by whichever
process opens the store first. Decision record 0015 says why.

Files in the store directory (all beside ``catalog.db``):

``.bas-server.json`` (mode 0600)
    The running server: its pid, port and key (a random one per start, never passed on a command
    line). Written by the server once it answers; removed when it stops.
``.bas-server.lease``
    Every process that has the store open holds a shared lock on it. The server stops when it
    can take the lock exclusively (nobody has the store open) and no request came for the idle
    timeout; it holds that lock until it has exited, so a process opening the store meanwhile
    waits and then starts a new server.
``.bas-server.start``
    Held while a process starts a server, so that two never start two.
``.bas-server.log``
    What the last server started printed; an error at start-up quotes its end.

A state file whose server does not answer with its key (the server was killed) is stale: it is
replaced by a new server.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core._environment import DEFAULT_IDLE_TIMEOUT, IDLE_TIMEOUT_ENV, LOCAL_SERVER_ENV
from ..core._errors import AnalysisStoreError, LocalServerError

STATE_FILE = ".bas-server.json"
LEASE_FILE = ".bas-server.lease"
START_LOCK_FILE = ".bas-server.start"
LOG_FILE = ".bas-server.log"
#: The module a server process runs (``python -m``); the server layer, not imported here.
SERVER_MODULE = "bluesky_analysis_store.server._local"
#: Seconds to wait for a new server to answer (tiled's imports are slow on a cold machine).
START_TIMEOUT = 180.0
#: Values of ``$BAS_LOCAL_SERVER`` that mean "in this process".
IN_PROCESS_VALUES = frozenset({"0", "off", "no", "false", "in-process"})


def use_local_server(local_server: bool | None) -> bool:
    """``local_server``, or (None) what ``$BAS_LOCAL_SERVER`` says; default: yes."""
    if local_server is not None:
        return local_server
    return os.environ.get(LOCAL_SERVER_ENV, "").strip().lower() not in IN_PROCESS_VALUES


def idle_timeout() -> float:
    """Seconds from ``$BAS_LOCAL_SERVER_IDLE`` (default :data:`DEFAULT_IDLE_TIMEOUT`)."""
    text = os.environ.get(IDLE_TIMEOUT_ENV, "").strip()
    if not text:
        return DEFAULT_IDLE_TIMEOUT
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not seconds >= 0:
        raise AnalysisStoreError(
            f"${IDLE_TIMEOUT_ENV}={text!r} is not a number of seconds (accepted: 0 or more, "
            f"e.g. {DEFAULT_IDLE_TIMEOUT:g})"
        )
    return seconds


@dataclass(frozen=True)
class ServerState:
    """What ``.bas-server.json`` says of a running local server."""

    pid: int
    port: int
    key: str

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def as_json(self) -> str:
        return json.dumps({"pid": self.pid, "port": self.port, "key": self.key})


def read_state(directory: Path) -> ServerState | None:
    """The state file's server, or None if there is none (or it is unreadable: stale)."""
    try:
        fields = json.loads((directory / STATE_FILE).read_text())
        return ServerState(int(fields["pid"]), int(fields["port"]), str(fields["key"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_state(directory: Path, state: ServerState) -> None:
    """Publish ``state`` whole (written under another name, then renamed), readable by the owner
    only: the key in it opens the store."""
    partial = directory / f"{STATE_FILE}.{os.getpid()}"
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(state.as_json())
    os.replace(partial, directory / STATE_FILE)


def remove_state(directory: Path, pid: int) -> None:
    """Remove the state file if it still names server ``pid`` (a newer server's is kept)."""
    state = read_state(directory)
    if state is not None and state.pid == pid:
        with contextlib.suppress(FileNotFoundError):
            (directory / STATE_FILE).unlink()


def answers(state: ServerState) -> bool:
    """Is the server of ``state`` running: its process alive and its health route answering?

    The health route is not queued behind other requests (see :mod:`._asgi`), so a server
    busy with a long request is not taken for a dead one. A server that answers but is not
    ours (another program took the port of a killed one) refuses the key at the first request.
    """
    import httpx

    try:
        os.kill(state.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's: not this store's server
        return False
    try:
        return httpx.get(f"{state.uri}/healthz", timeout=10).status_code == 200
    except httpx.HTTPError:
        return False


class Lease:
    """This process's claim on an embedded store's local server: while it is held, the server
    does not stop. Released by :meth:`close` (or by the process's death)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        try:
            descriptor = os.open(directory / LEASE_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        except PermissionError:  # a store this user may only read: a lock needs no writing
            descriptor = os.open(directory / LEASE_FILE, os.O_RDONLY)
        self._descriptor: int | None = descriptor
        # waits while a server that decided to stop is stopping
        fcntl.flock(descriptor, fcntl.LOCK_SH)

    def close(self) -> None:
        if self._descriptor is not None:
            os.close(self._descriptor)
            self._descriptor = None


@dataclass
class LocalConnection:
    """A client of an embedded store's local server and the lease that keeps the server up;
    :meth:`close` releases both."""

    client: Any
    lease: Lease

    def close(self) -> None:
        try:
            self.client.context.close()
        finally:
            self.lease.close()


def connect(directory: Path, structure_clients: Any = None) -> LocalConnection:
    """A tiled client of the local server of the embedded store in ``directory``, started if
    none answers (``structure_clients``: tiled's, default ``"numpy"``).

    Raises
    ------
    LocalServerError
        If a server could not be started (quoting its log) or did not answer in time.
    """
    from tiled.client import from_uri

    lease = Lease(directory)
    try:
        state = read_state(directory)
        if state is None or not answers(state):
            state = _start(directory)
        client = from_uri(state.uri, structure_clients or "numpy", api_key=state.key)
    except BaseException:
        lease.close()
        raise
    return LocalConnection(client, lease)


@contextlib.contextmanager
def _start_lock(directory: Path) -> Any:
    descriptor = os.open(directory / START_LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)


def _start(directory: Path) -> ServerState:
    """Start the local server (unless another process has just started one) and wait until it
    answers."""
    with _start_lock(directory):
        state = read_state(directory)  # another process may have started it while we waited
        if state is not None and answers(state):
            return state
        if state is not None:  # stale: its server was killed
            remove_state(directory, state.pid)
        log = directory / LOG_FILE
        environment = {
            name: value
            for name, value in os.environ.items()
            if not name.startswith("BAS_") or name == IDLE_TIMEOUT_ENV  # no keys of ours
        }
        with log.open("wb") as output:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    SERVER_MODULE,
                    str(directory),
                    "--idle-timeout",
                    str(idle_timeout()),
                ],
                cwd=directory,
                env=environment,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # not stopped by the terminal's Ctrl-C
            )
        # reaps it when it exits, whenever that is (else a zombie would look alive)
        threading.Thread(target=process.wait, name="bas-local-server", daemon=True).start()
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            state = read_state(directory)
            if state is not None and state.pid == process.pid and answers(state):
                return state
            if process.poll() is not None:
                raise LocalServerError(
                    f"the local server of the embedded store {directory} exited at start "
                    f"(status {process.returncode}); its log {log} ends:\n{_tail(log)}"
                )
            time.sleep(0.05)
        process.terminate()
        raise LocalServerError(
            f"the local server of the embedded store {directory} did not answer within "
            f"{START_TIMEOUT:g} s (stopped); its log {log} ends:\n{_tail(log)}"
        )


def _tail(log: Path, lines: int = 20) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    return "(unreadable)"


def stop(directory: Path, timeout: float = 30.0) -> int | None:
    """Stop the local server of the store in ``directory`` (SIGTERM) and wait until it has
    exited; its pid, or None if none was running."""
    import signal

    state = read_state(directory)
    if state is None or not answers(state):
        return None
    os.kill(state.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(state.pid, 0)
        except ProcessLookupError:
            return state.pid
        time.sleep(0.05)
    raise LocalServerError(
        f"the local server of {directory} (pid {state.pid}) did not stop within {timeout:g} s"
    )
