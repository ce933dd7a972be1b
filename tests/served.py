"""A real ``bas serve`` subprocess on 127.0.0.1, shared by test_server.py and test_access.py.

The keys are sentinels: distinctive strings that test_access.py looks for in logs and files.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from bluesky_analysis_store import AnalysisStore

WRITE_KEY = f"SentinelWrite{secrets.token_hex(16)}"
READ_KEY = f"SentinelRead{secrets.token_hex(16)}"

#: ``bas serve`` with every logger at the level given as its first argument (``DEBUG``,
#: ``INFO``) and tiled's access log (tiled's own log format, each line after the pid of the
#: process that wrote it: a worker of ``--workers N``) on; ``bas serve`` itself hard-codes
#: uvicorn's ``log_level="warning"``. uvicorn hands the same configuration to its workers.
LOGGING = """
import copy, sys, uvicorn
from tiled.server.logging_config import LOGGING_CONFIG
level = sys.argv.pop(1)
config = copy.deepcopy(LOGGING_CONFIG)
for formatter in config["formatters"].values():
    formatter["use_colors"] = False
    formatter["format"] = "pid %(process)d " + formatter["format"]
for logger in config["loggers"].values():
    logger["level"] = level
config["root"] = {"handlers": ["default"], "level": level}
real_init = uvicorn.Config.__init__  # every server's settings, one process or several
def init(self, app, **kwargs):
    kwargs.update(log_level=level.lower(), access_log=True, log_config=config)
    real_init(self, app, **kwargs)
uvicorn.Config.__init__ = init
from bluesky_analysis_store.cli import main
sys.exit(main(sys.argv[1:]))
"""


@dataclass
class Server:
    uri: str
    directory: Path
    log: Path
    backend: str
    #: ``tiled@127.0.0.1:PORT`` of the PostgreSQL cluster holding catalog and tables, if any
    postgres: str | None = None
    debug_logging: bool = False
    #: the ``bas serve`` process (with ``--workers N``: the workers' parent)
    pid: int = 0

    def store(self, key: str) -> AnalysisStore:
        return AnalysisStore.open(self.uri, api_key=key, root=self.directory / "files")


def bas_serve(
    directory: Path,
    *extra: str,
    env: dict[str, str],
    log: Path,
    debug_logging: bool = False,
    log_level: str | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``bas serve``; its output goes to ``log`` (a pipe nobody reads could block it).

    ``debug_logging``: every logger at DEBUG and the access log on (:data:`LOGGING`);
    ``log_level`` (e.g. ``"INFO"``): the same at that level."""
    level = "DEBUG" if debug_logging else log_level
    program = ["-c", LOGGING, level] if level else ["-m", "bluesky_analysis_store.cli"]
    command = [sys.executable, *program, "serve", str(directory), *extra]
    environment = {**os.environ, "PYTHONUNBUFFERED": "1", **env}
    with log.open("wb") as out:
        return subprocess.Popen(command, env=environment, stdout=out, stderr=subprocess.STDOUT)


@contextmanager
def running_server(
    directory: Path,
    port: int,
    *extra: str,
    backend: str,
    postgres: str | None = None,
    debug_logging: bool = False,
    log_level: str | None = None,
) -> Iterator[Server]:
    """``bas serve`` with :data:`WRITE_KEY` and :data:`READ_KEY`, once it answers; then stopped
    (and its workers with it: ``--workers N``). ``extra``: more arguments of ``bas serve``;
    ``debug_logging``, ``log_level``: see :func:`bas_serve`."""
    env = {"BAS_API_KEY": WRITE_KEY, "BAS_READ_API_KEY": READ_KEY}
    log = directory.parent / f"{directory.name}.log"
    process = bas_serve(
        directory,
        "--port",
        str(port),
        *extra,
        env=env,
        log=log,
        debug_logging=debug_logging,
        log_level=log_level,
    )
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180  # tiled imports and initializes its catalog: slow here
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"bas serve exited: {log.read_text()}")
            try:
                if httpx.get(f"{uri}/api/v1/", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("bas serve did not become ready in 180 s")
            time.sleep(0.5)
        yield Server(uri, directory, log, backend, postgres, debug_logging, process.pid)
    finally:
        process.terminate()
        process.wait(timeout=30)
