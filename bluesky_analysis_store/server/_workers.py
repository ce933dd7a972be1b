"""``bas serve --workers N``: several server processes behind one port.

uvicorn runs several workers only from an import string: each worker process calls
:func:`worker_app`, which builds its app with :func:`._server.build_server_app`, the very
builder of the single-process server, from the options the parent leaves in the environment
(``$BAS_SERVE_WORKER``; the keys stay where they were, in ``$BAS_API_KEY`` and
``$BAS_READ_API_KEY``, never on a command line or in a file).

What writes to the store is done once, by the parent, before any worker starts
(:func:`prepare`): the catalog's tables, a moved store's recorded paths, the lineage index's
triggers, the runs container. Each worker then finds them there and only checks; N processes
never race to create them.

Several processes may share only a PostgreSQL catalog and PostgreSQL tables: SQLite takes one
writer at a time and DuckDB one process (:func:`check_workers` refuses the rest at once).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..core._environment import SERVE_WORKER_ENV
from ..core._errors import AnalysisStoreError

#: uvicorn's import string of the factory each worker process calls.
WORKER_APP = f"{__name__}:worker_app"


def _is_postgresql(uri: str | None) -> bool:
    return uri is not None and uri.split(":", 1)[0].split("+", 1)[0] == "postgresql"


def check_workers(workers: int, catalog_uri: str | None, tables_uri: str | None) -> None:
    """Refuse a number of workers the store's databases cannot take, naming the option and what
    would be accepted (before anything starts)."""
    if workers < 1:
        raise AnalysisStoreError(f"--workers must be 1 or more, not {workers}")
    if workers == 1 or (_is_postgresql(catalog_uri) and _is_postgresql(tables_uri)):
        return
    missing = [
        option
        for option, uri in (("--catalog", catalog_uri), ("--tables", tables_uri))
        if not _is_postgresql(uri)
    ]
    raise AnalysisStoreError(
        f"--workers {workers} needs PostgreSQL for both the catalog and the tables, but "
        f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not PostgreSQL (an "
        "SQLite catalog takes one writer at a time and a DuckDB table file one process): give "
        "--catalog postgresql+asyncpg://USER@HOST:PORT/DB and --tables "
        "postgresql://USER@HOST:PORT/DB, or serve with --workers 1"
    )


def prepare(directory: Path, catalog_uri: str, tables_uri: str) -> None:
    """Make, once and in this process, everything the workers' start-up would create: the
    tree of :func:`._server.served_tree` and its app's start-up tasks (then stopped)."""
    from ..store._catalog import run_start_up
    from ._server import served_tree

    run_start_up(served_tree(directory, catalog_uri=catalog_uri, tables_uri=tables_uri))


def run_workers(
    directory: Path,
    workers: int,
    *,
    catalog_uri: str,
    tables_uri: str,
    host: str,
    port: int,
    announce: Callable[[], None] = lambda: None,
) -> None:
    """Serve the store with ``workers`` processes on ``host:port`` until SIGINT or SIGTERM,
    which stop every worker (uvicorn's supervisor); the keys are read from the environment.
    ``announce`` is called once the store is prepared, before the workers start."""
    from ._server import check_keys, keys_from_environment

    check_workers(workers, catalog_uri, tables_uri)
    check_keys(*keys_from_environment())  # at once, not in every worker
    directory = directory.resolve()
    prepare(directory, catalog_uri, tables_uri)
    options = {"directory": str(directory), "catalog": catalog_uri, "tables": tables_uri}
    os.environ[SERVE_WORKER_ENV] = json.dumps(options)  # inherited by the spawned workers
    announce()
    serve_processes(WORKER_APP, workers, host=host, port=port)


def serve_processes(app: str, workers: int, *, host: str, port: int) -> None:
    """Serve the app factory ``app`` (an import string) with ``workers`` processes on
    ``host:port`` until SIGINT or SIGTERM (what ``uvicorn.run`` does for several workers).

    Raises :class:`AnalysisStoreError` when a worker failed to start: uvicorn then stops the
    others and returns as if asked to stop, and ``bas serve`` would exit 0 with nothing served.
    """
    import uvicorn
    from uvicorn.config import STARTUP_FAILURE
    from uvicorn.supervisors import Multiprocess

    config = uvicorn.Config(
        app, factory=True, workers=workers, host=host, port=port, log_level="warning"
    )
    supervisor = Multiprocess(config, sockets=[config.bind_socket()])
    supervisor.run()
    failed = [p.pid for p in supervisor.processes if p.exitcode == STARTUP_FAILURE]
    if failed:
        raise AnalysisStoreError(
            f"a server worker (pid {', '.join(map(str, failed))}) failed to start, so none "
            "serves: its error is in the log above; fix it and start bas serve again"
        )


def worker_app() -> Any:
    """The app of one worker process (uvicorn's factory): :func:`._server.build_server_app`
    with the parent's options and the keys from the environment.

    A worker that cannot build its app exits with uvicorn's start-up failure status, which stops
    the whole server (:func:`serve_processes` then raises): any other exit would have uvicorn
    start the same broken worker again, forever.
    """
    import logging

    from uvicorn.config import STARTUP_FAILURE

    try:
        return _build_worker_app()
    except Exception:
        logging.getLogger("bluesky_analysis_store.server").exception(
            "this server worker (pid %d) cannot start", os.getpid()
        )
        sys.exit(STARTUP_FAILURE)


def _build_worker_app() -> Any:
    from ._server import build_server_app, keys_from_environment

    try:
        options = json.loads(os.environ[SERVE_WORKER_ENV])
    except (KeyError, ValueError):
        raise AnalysisStoreError(
            f"${SERVE_WORKER_ENV} is missing or not JSON: worker_app is started by "
            "`bas serve --workers N`, which sets it"
        ) from None
    write_key, read_key = keys_from_environment()
    return build_server_app(
        Path(options["directory"]),
        write_key,
        read_key=read_key,
        catalog_uri=options["catalog"],
        tables_uri=options["tables"],
    )
