"""``bas serve --workers N``: two real server processes behind one port, on PostgreSQL.

One server for the module (start-up is slow): a fresh catalog and table database, so that the
parent initializes them before its workers start, and nothing else is in them.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from helpers import free_port, make_provenance
from served import READ_KEY, WRITE_KEY, Server, running_server

from bluesky_analysis_store import AnalysisStoreError

#: An access-log line (tests/served.py puts the pid of the writing process first).
ACCESS = re.compile(r'^pid (\d+) .*"[A-Z]+ \S+ HTTP/1\.1" \d{3}', re.MULTILINE)


@dataclass
class Workers:
    server: Server
    catalog: str
    tables: str


@pytest.fixture(scope="module")
def workers(postgres_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workers]:
    from postgres import new_database

    with (
        new_database(postgres_server, "workers_catalog") as catalog_db,
        new_database(postgres_server, "workers_tables") as tables_db,
    ):
        catalog = f"postgresql+asyncpg://{postgres_server}/{catalog_db}"
        tables = f"postgresql://{postgres_server}/{tables_db}"
        options = ["--workers", "2", "--catalog", catalog, "--tables", tables]
        with running_server(
            tmp_path_factory.mktemp("served-workers"),
            free_port(),
            *options,
            backend="postgresql",
            postgres=postgres_server,
            log_level="INFO",  # the access log, with each line's pid
        ) as server:
            yield Workers(server, catalog, tables)


def _children(pid: int) -> list[int]:
    """The worker processes of ``bas serve`` ``pid`` (not multiprocessing's resource tracker)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes()
        except OSError:  # gone meanwhile
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if parent == pid and b"spawn_main" in command:
            found.append(int(entry.name))
    return sorted(found)


def _running(pid: int) -> bool:
    """Is ``pid`` a process that has not exited (a zombie waits for its parent's wait)?"""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _serving_pids(server: Server) -> set[int]:
    return {int(pid) for pid in ACCESS.findall(server.log.read_text(errors="replace"))}


def _spectra(seed: int) -> list[dict[str, Any]]:
    rows = np.random.default_rng(seed).random((5, 16))
    return [{"primary": {"spectrum": row, "total": float(row.sum())}} for row in rows]


def test_two_clients_save_at_once_through_two_workers(workers):
    """Two clients save at once (each its own runs, then the same lineages at the same moment):
    every run is readable, each shared lineage has one run, and both workers served."""
    server = workers.server
    worker_pids = _children(server.pid)
    assert len(worker_pids) == 2, worker_pids
    own = {
        (client, i): make_provenance(parameters={"client": client, "i": i})
        for client in range(2)
        for i in range(3)
    }
    shared = [make_provenance(parameters={"shared": n}) for n in range(3)]
    stores = [server.store(WRITE_KEY) for _ in range(2)]
    together = threading.Barrier(2, timeout=120)

    def save(client: int) -> tuple[list[str], list[str]]:
        store = stores[client]
        together.wait()
        mine = [
            store.save(_spectra(10 * client + i), {}, provenance=own[client, i]) for i in range(3)
        ]
        same = []
        for n, provenance in enumerate(shared):
            together.wait()  # both save this lineage at the same moment
            same.append(store.save(_spectra(100 + n), {}, provenance=provenance))
        return mine, same

    try:
        with ThreadPoolExecutor(2) as pool:
            (mine_0, same_0), (mine_1, same_1) = pool.map(save, range(2))
    finally:
        for store in stores:
            store.close()
    assert same_0 == same_1  # the second saver of a lineage got the first one's run
    with server.store(READ_KEY) as reader:
        for client, uids in enumerate((mine_0, mine_1)):
            for i, uid in enumerate(uids):
                run = reader[uid]
                assert run.metadata["stop"]["exit_status"] == "success"
                np.testing.assert_allclose(
                    run["primary"]["spectrum"].read(),
                    [r["primary"]["spectrum"] for r in _spectra(10 * client + i)],
                )
        for uid in same_0:
            lineage = reader[uid].metadata["start"]["lineage_hash"]
            assert reader.with_lineage(lineage, include_incomplete=True) == [uid]
        assert len(reader.runs) == 9  # nothing twice, nothing more
    # both workers answered requests (a few more on new connections if the kernel happened to
    # hand every connection of the saves to one of them)
    deadline = time.monotonic() + 60
    while _serving_pids(server) != set(worker_pids) and time.monotonic() < deadline:
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda _: httpx.get(f"{server.uri}/healthz"), range(16)))
        time.sleep(0.5)  # the log is written by other processes
    assert _serving_pids(server) == set(worker_pids)


def _status(server: Server, key: str | None, method: str = "GET") -> int:
    headers = {"Authorization": f"Apikey {key}"} if key else {}
    body = {"structure_family": "container", "metadata": {}, "specs": []}
    response = httpx.request(
        method,
        f"{server.uri}/api/v1/metadata/analysis",
        headers=headers,
        json=body if method == "POST" else None,
    )
    return response.status_code


def test_every_worker_checks_the_keys(workers):
    """Each request on a new connection: whichever worker takes it answers the same."""
    server = workers.server
    for _ in range(6):
        assert _status(server, None) == 401
        assert _status(server, "0123456789abcdef0123") == 401
        assert _status(server, READ_KEY) == 200
        assert _status(server, READ_KEY, "POST") == 403
        assert _status(server, WRITE_KEY) == 200


def test_the_workers_found_the_store_prepared(workers):
    """The parent made the catalog's tables, the lineage index and the runs container before
    the workers started: what each worker's start-up does again finds it all and writes
    nothing (no race of N processes creating them)."""
    from bluesky_analysis_store.store import _lineage_index
    from bluesky_analysis_store.store._catalog import initialize_catalog
    from bluesky_analysis_store.store._relocation import locate_store

    assert initialize_catalog(workers.catalog) is False
    assert _lineage_index.ensure(workers.catalog) is False
    location = locate_store(workers.server.directory.resolve(), workers.catalog)
    assert not location.moved
    assert not location.unrecorded
    headers = {"Authorization": f"Apikey {READ_KEY}"}
    response = httpx.get(f"{workers.server.uri}/api/v1/metadata/analysis", headers=headers)
    assert response.json()["data"]["attributes"]["specs"][0]["name"] == "CatalogOfBlueskyRuns"


def test_a_worker_builds_the_single_servers_app(workers, monkeypatch):
    """``worker_app`` (what each worker calls) builds ``bas serve``'s app from the environment:
    the keys behind :class:`KeyGuard`, the store's app, and no one-request-at-a-time lock (it
    exists for DuckDB's single connection; PostgreSQL tables serve requests in parallel)."""
    import json

    from tiled.server.settings import get_settings

    from bluesky_analysis_store.server._server import KeyGuard
    from bluesky_analysis_store.server._workers import worker_app
    from bluesky_analysis_store.store._asgi import AppWrapper

    settings = get_settings()  # tiled's build_app writes the key there (tests/test_access.py)
    monkeypatch.setattr(settings, "single_user_api_key", settings.single_user_api_key)
    options = {
        "directory": str(workers.server.directory),
        "catalog": workers.catalog,
        "tables": workers.tables,
    }
    monkeypatch.setenv("BAS_SERVE_WORKER", json.dumps(options))
    monkeypatch.setenv("BAS_API_KEY", WRITE_KEY)
    monkeypatch.delenv("BAS_READ_API_KEY", raising=False)
    app = worker_app()
    assert isinstance(app, KeyGuard)
    layers = []
    while isinstance(app, KeyGuard | AppWrapper):
        layers.append(type(app).__name__)
        app = app.app
    assert layers == ["KeyGuard", "AssetRoutes"]
    monkeypatch.delenv("BAS_SERVE_WORKER")
    # uvicorn's start-up failure status (3), which stops the server instead of a restart loop;
    # what went wrong is logged (the supervisor's test shows it)
    with pytest.raises(SystemExit) as stopped:
        worker_app()
    assert stopped.value.code == 3


def _bas_serve(*args: str, directory: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "BAS_API_KEY": WRITE_KEY}
    return subprocess.run(
        [sys.executable, "-m", "bluesky_analysis_store.cli", "serve", str(directory), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_several_workers_need_postgresql_for_catalog_and_tables(tmp_path):
    from bluesky_analysis_store.server._workers import check_workers

    directory = tmp_path / "store"
    result = _bas_serve("--workers", "2", directory=directory)
    assert result.returncode == 1
    assert result.stderr.startswith(
        "bas serve: error: --workers 2 needs PostgreSQL for both the catalog and the tables, "
        "but --catalog and --tables are not PostgreSQL (an SQLite catalog takes one writer at "
        "a time and a DuckDB table file one process): give --catalog "
        "postgresql+asyncpg://USER@HOST:PORT/DB and --tables postgresql://USER@HOST:PORT/DB, "
        "or serve with --workers 1"
    ), result.stderr
    assert not directory.exists()  # refused before anything started
    pg = "postgresql+asyncpg://tiled@127.0.0.1:1/catalog"
    with pytest.raises(AnalysisStoreError, match="but --tables is not PostgreSQL"):
        check_workers(2, pg, None)
    with pytest.raises(AnalysisStoreError, match="but --catalog is not PostgreSQL"):
        check_workers(3, "sqlite+aiosqlite:///x.db", "postgresql://tiled@127.0.0.1:1/tables")
    with pytest.raises(AnalysisStoreError, match="--workers must be 1 or more, not 0"):
        check_workers(0, pg, "postgresql://tiled@127.0.0.1:1/tables")
    check_workers(1, None, None)  # one process: any catalog
    check_workers(2, "postgresql://tiled@h/c", "postgresql://tiled@h/t")


def test_sigterm_stops_every_worker(workers):
    """Last in this module: it stops the module's server."""
    server = workers.server
    worker_pids = _children(server.pid)
    assert len(worker_pids) == 2
    os.kill(server.pid, signal.SIGTERM)
    deadline = time.monotonic() + 60
    while any(_running(pid) for pid in [server.pid, *worker_pids]):
        assert time.monotonic() < deadline, "bas serve --workers 2 did not stop on SIGTERM"
        time.sleep(0.2)


@pytest.mark.timeout(120)
def test_a_worker_that_fails_to_start_stops_the_server_with_an_error(monkeypatch, capfd):
    """A worker whose app cannot be built (here: the parent's options are missing) exits with
    uvicorn's start-up failure status, so uvicorn stops every worker instead of starting the
    broken one again forever, and the supervisor raises instead of returning as if asked to stop
    (``bas serve`` exits 1, not 0)."""
    from bluesky_analysis_store.core._environment import SERVE_WORKER_ENV
    from bluesky_analysis_store.server._workers import WORKER_APP, serve_processes

    monkeypatch.delenv(SERVE_WORKER_ENV, raising=False)
    with pytest.raises(AnalysisStoreError, match=r"failed to start, so none serves"):
        serve_processes(WORKER_APP, 2, host="127.0.0.1", port=free_port())
    assert f"${SERVE_WORKER_ENV} is missing or not JSON" in capfd.readouterr().err
