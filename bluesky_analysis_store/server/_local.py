"""The local server of an embedded store: ``bas serve``'s app on a free loopback port, with a
random key in a 0600 state file, stopped once idle.

Started by :func:`..store._local_server.connect` as ``python -m`` this module; the protocol
(state, lease and start-lock files) is described there.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import secrets
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

from ..store._local_server import LEASE_FILE, ServerState, remove_state, write_state


class ActivityWatch:
    """ASGI middleware that knows how many requests are in flight and when the last one ended."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.in_flight = 0
        self.last_active = time.monotonic()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        self.in_flight += 1  # the event loop's thread only: no lock needed
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1
            self.last_active = time.monotonic()

    def idle_for(self) -> float:
        return 0.0 if self.in_flight else time.monotonic() - self.last_active


def nobody_holds_a_lease(descriptor: int) -> bool:
    """Take the lease file's lock exclusively if no process has the store open (then keep it:
    a process opening the store now waits until this server has exited)."""
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def serve_local(directory: Path, idle_timeout: float) -> None:
    """Serve the embedded store in ``directory`` on 127.0.0.1 until nobody has had it open for
    ``idle_timeout`` seconds (or SIGTERM)."""
    import uvicorn

    from ._server import build_server_app

    directory = directory.resolve()
    key = secrets.token_hex(32)
    watch = ActivityWatch(build_server_app(directory, key))  # holds the store: DuckDB
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))  # a free port, known before uvicorn starts
    server = uvicorn.Server(uvicorn.Config(watch, log_level="warning", lifespan="on"))
    state = ServerState(os.getpid(), listener.getsockname()[1], key)
    lease = os.open(directory / LEASE_FILE, os.O_RDWR | os.O_CREAT, 0o644)

    def look_after() -> None:
        while not server.started and not server.should_exit:
            time.sleep(0.02)
        if server.should_exit:
            return
        write_state(directory, state)  # now it answers
        print(f"serving {directory} at {state.uri} (pid {state.pid})", flush=True)
        while not server.should_exit:
            time.sleep(min(1.0, max(idle_timeout / 4, 0.05)))
            if watch.idle_for() >= idle_timeout and nobody_holds_a_lease(lease):
                remove_state(directory, state.pid)  # before anyone could read it again
                print(f"idle for {idle_timeout:g} s with nobody attached: stopping", flush=True)
                server.should_exit = True

    threading.Thread(target=look_after, name="bas-local-server-watch", daemon=True).start()
    # uvicorn re-raises the SIGTERM it caught once it has stopped; then exit through `finally`
    signal.signal(signal.SIGTERM, _exit)
    try:
        server.run(sockets=[listener])
    finally:
        remove_state(directory, state.pid)
        # the lease file's lock is released when the process exits (after the store's own)


def _exit(signum: int, frame: Any) -> None:
    sys.exit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=f"python -m {__name__}", description="The local server of an embedded store."
    )
    parser.add_argument("directory", type=Path)
    parser.add_argument("--idle-timeout", type=float, required=True)
    args = parser.parse_args(argv)
    serve_local(args.directory, args.idle_timeout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
