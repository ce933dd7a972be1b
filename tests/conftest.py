"""Shared fixtures: one real in-process tiled catalog (SQLite) per session."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

# `make test` tries the same fuzz cases on every run, so a submission's CI does not depend on a
# random draw; `make fuzz` explores new cases (random seeds, BAS_FUZZ_SCALE times as many).
settings.register_profile("deterministic", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile("deterministic")

# Most tests open embedded stores in process (one server start per store would cost seconds);
# tests/test_local_server.py, the IPython profile's and the CLI's own tests use the local server.
os.environ.setdefault("BAS_LOCAL_SERVER", "0")


@dataclass
class TiledCatalog:
    """A real tiled app on SQLite, with a readable file root for derived files."""

    client: Any
    files: Path

    def new_runs_container(self) -> Any:
        """A fresh ``CatalogOfBlueskyRuns`` container (so tests do not see each other's runs)."""
        from tiled.structures.core import Spec

        return self.client.create_container(
            uuid.uuid4().hex, specs=[Spec("CatalogOfBlueskyRuns", version="3.0")]
        )

    def new_root(self) -> Path:
        """A fresh directory inside tiled's readable storage."""
        root = self.files / uuid.uuid4().hex
        root.mkdir()
        return root


@contextmanager
def _serve_in_process(tree: Any, files: Path) -> Iterator[TiledCatalog]:
    from bluesky_analysis_store.store._catalog import in_process_client

    context, client = in_process_client(tree)
    try:
        yield TiledCatalog(client, files)
    finally:
        context.close()


@pytest.fixture(scope="session")
def tiled_catalog(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TiledCatalog]:
    """A real in-process tiled app on SQLite (the embedded store's own layout)."""
    from bluesky_analysis_store.store._catalog import embedded_tree

    directory = tmp_path_factory.mktemp("tiled")
    with _serve_in_process(embedded_tree(directory), directory / "files") as catalog:
        yield catalog


@pytest.fixture(scope="session", autouse=True)
def no_local_server_left(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """At the end of the session, stop every local server a test left running (one stops by
    itself once idle, minutes later: nothing of the tests may outlive them)."""
    yield
    from bluesky_analysis_store.store._local_server import STATE_FILE, stop

    for state in tmp_path_factory.getbasetemp().rglob(STATE_FILE):
        stop(state.parent)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """``tiled@127.0.0.1:PORT`` of a throwaway cluster (one per session), or skip with why."""
    from postgres import PostgresUnavailableError, throwaway_cluster

    try:
        with throwaway_cluster() as server:
            yield server
    except PostgresUnavailableError as reason:
        if os.environ.get("BAS_REQUIRE_POSTGRES"):
            pytest.fail(f"PostgreSQL is required here (BAS_REQUIRE_POSTGRES) but: {reason}")
        pytest.skip(f"PostgreSQL tests skipped: {reason}")


@pytest.fixture(scope="session")
def postgres_catalog(
    postgres_server: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TiledCatalog]:
    """A real in-process tiled app whose catalog and tables are in PostgreSQL."""
    from bluesky_analysis_store.store._catalog import catalog_tree

    directory = tmp_path_factory.mktemp("tiled-pg")
    tree = catalog_tree(
        f"postgresql+asyncpg://{postgres_server}/catalog",
        directory,
        tables_uri=f"postgresql://{postgres_server}/tables",
    )
    with _serve_in_process(tree, directory / "files") as catalog:
        yield catalog


@pytest.fixture(params=["sqlite", "postgresql"])
def any_catalog(request: pytest.FixtureRequest) -> TiledCatalog:
    """Each store test runs on SQLite and on PostgreSQL."""
    return request.getfixturevalue(
        f"{'tiled' if request.param == 'sqlite' else 'postgres'}_catalog"
    )


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def bas_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A real ``bas serve`` subprocess per backend, shared by the session (startup is slow).

    SQLite runs ``bas serve`` exactly as users do; PostgreSQL runs it with every logger at
    DEBUG and the access log on, so test_access.py checks both logs for keys.
    """
    from helpers import free_port
    from served import running_server

    directory = tmp_path_factory.mktemp(f"served-{request.param}")
    extra: list[str] = []
    postgres = None
    if request.param == "postgresql":
        postgres = request.getfixturevalue("postgres_server")
        extra = ["--catalog", f"postgresql+asyncpg://{postgres}/catalog"]
        extra += ["--tables", f"postgresql://{postgres}/tables"]
    with running_server(
        directory,
        free_port(),
        *extra,
        backend=request.param,
        postgres=postgres,
        debug_logging=request.param == "postgresql",
    ) as server:
        yield server


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--reliability-report",
        metavar="PATH",
        help="after a run in which every test passed, write the reliability figures the tests "
        "reported as Markdown to PATH (RELIABILITY.md)",
    )


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    """Print the reliability figures of this run (and write RELIABILITY.md if asked)."""
    import reliability
    from helpers import FIGURES

    if not FIGURES:
        return
    terminalreporter.write_sep("=", f"reliability figures ({len(FIGURES)}), as in RELIABILITY.md")
    for test, area, _, values in FIGURES:
        shown = " ".join(f"{k}={v}" for k, v in values.items())
        terminalreporter.write_line(f"{area}: {shown}  [{test}]")
    path = config.getoption("--reliability-report")
    if path and exitstatus == 0:
        reliability.write(Path(path), FIGURES)
        terminalreporter.write_line(f"wrote {path}")
    elif path:
        terminalreporter.write_line(f"not writing {path}: some tests failed")
