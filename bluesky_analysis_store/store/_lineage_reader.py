"""Asking the lineage index (:mod:`._lineage_index`) a question, from where the store is.

An embedded SQLite store reads its catalog file directly (read-only, no request), a store on a
PostgreSQL catalog this process reaches reads it over a connection of its own; any other store
asks its app's one route (:mod:`._lineage_route`), which answers in one request. Either
answers None when there is no index to ask (a read-only open of a store that has not gained it
yet, a plain tiled server): the caller then searches by scan, as before the index, and a
warning says once how to gain it.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any, Protocol

logger = logging.getLogger("bluesky_analysis_store.store")

#: The route's path under the app's ``/api/v1/``, followed by the container's path.
ROUTE = "bas/lineage"
_warned: set[str] = set()


def warn_once(where: str, why: str) -> None:
    """Say once per process and store that lineage queries search by scan, and why."""
    if where in _warned:
        return
    _warned.add(where)
    logger.warning(
        "the lineage index of %s cannot be used (%s): lineage queries search every run "
        "instead, slower on a large catalog; `bas fsck --repair` (or opening the store for "
        "writing) installs it",
        where,
        why,
    )


class LineageReader(Protocol):
    def ask(self, ask: str, **args: Any) -> dict[str, Any] | None:
        """The answer of :func:`._lineage_index.answer`, or None: no index here."""

    def close(self) -> None:
        """Release what it holds (a connection)."""


class SqliteReader:
    """The index of an embedded store's SQLite catalog, read in this process (read-only)."""

    def __init__(self, catalog: Path, path_parts: list[str]) -> None:
        self.catalog = catalog
        self._path_parts = path_parts
        self._lock = threading.Lock()  # one connection; a LiveAnalysis thread may ask too
        self._connection: Any = None
        self._container: int | None = None

    def _connect(self) -> Any:
        import sqlite3

        if self._connection is None:
            uri = f"{self.catalog.as_uri()}?mode=ro"
            self._connection = sqlite3.connect(uri, uri=True, timeout=60, check_same_thread=False)
        return self._connection

    def ask(self, ask: str, **args: Any) -> dict[str, Any] | None:
        from ._lineage_index import answer, installed

        with self._lock:
            connection = self._connect()

            def execute(sql: str, params: Any) -> list[tuple[Any, ...]]:
                return connection.execute(sql, params or {}).fetchall()

            if self._container is None:
                if not installed(execute, "sqlite"):
                    warn_once(str(self.catalog.parent), "not installed")
                    return None
                self._container = container_id(execute, self._path_parts)
                if self._container is None:
                    return None
            try:
                return answer(execute, "sqlite", self._container, ask, args)
            finally:
                connection.rollback()  # end the read: let writers check point

    def close(self) -> None:
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None


class PostgresReader:
    """The index of a PostgreSQL catalog, read in this process over a connection of its own
    (a store whose catalog this process can reach: no request). asyncpg runs on a private
    event loop in a daemon thread; each question is one round trip."""

    def __init__(self, catalog_uri: str, path_parts: list[str]) -> None:
        self.catalog_uri = catalog_uri
        self._path_parts = path_parts
        self._lock = threading.Lock()
        self._loop: Any = None
        self._thread: Any = None
        self._engine: Any = None
        self._container: int | None = None

    def _run(self, work: Any) -> Any:
        import asyncio

        from ._lineage_index import sync_execute

        if self._loop is None:
            from sqlalchemy.ext.asyncio import create_async_engine

            self._loop = asyncio.new_event_loop()
            self._thread = threading.Thread(
                target=self._loop.run_forever, name="bas-lineage-index", daemon=True
            )
            self._thread.start()
            self._engine = create_async_engine(self.catalog_uri, pool_size=1, max_overflow=0)

        async def run() -> Any:
            async with self._engine.connect() as connection:
                return await connection.run_sync(lambda sync: work(sync_execute(sync)))

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result()

    def ask(self, ask: str, **args: Any) -> dict[str, Any] | None:
        from ._lineage_index import answer, installed

        def work(execute: Any) -> dict[str, Any] | None:
            if self._container is None:
                if not installed(execute, "postgresql"):
                    return None
                self._container = container_id(execute, self._path_parts)
                if self._container is None:
                    return None
            return answer(execute, "postgresql", self._container, ask, args)

        with self._lock:
            result: dict[str, Any] | None = self._run(work)
        if result is None:
            warn_once(self.catalog_uri.split("@")[-1], "not installed")
        return result

    def close(self) -> None:
        import asyncio

        with self._lock:
            if self._loop is None:
                return
            asyncio.run_coroutine_threadsafe(self._engine.dispose(), self._loop).result()
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._loop.close()
            self._loop = self._thread = self._engine = None


def container_id(execute: Any, path_parts: list[str]) -> int | None:
    """The node id of the container at ``path_parts`` (from tiled's root, id 0), or None."""
    node: int | None = 0
    for key in (part for part in path_parts if part):  # tiled's client starts with ""
        rows = execute("SELECT id FROM nodes WHERE parent = :p AND key = :k", {"p": node, "k": key})
        node = rows[0][0] if rows else None
        if node is None:
            return None
    return node


class RouteReader:
    """The index behind the store's app, asked through its route (one request a question)."""

    def __init__(self, runs: Any) -> None:
        self._runs = runs
        self._available = True

    def ask(self, ask: str, **args: Any) -> dict[str, Any] | None:
        if not self._available:
            return None
        context = getattr(self._runs, "context", None)
        if context is None or not hasattr(context, "http_client"):
            self._available = False
            return None
        url = f"{context.api_uri}{ROUTE}/{'/'.join(p for p in self._runs.path_parts if p)}"
        import json

        params = {"ask": ask, "args": json.dumps(args)}
        response = context.http_client.get(url, params=params)
        if response.status_code in (404, 405, 409):  # no route (not our app) or no index
            self._available = response.status_code == 409  # the index may come back
            where = str(context.api_uri)
            warn_once(where, "not installed" if response.status_code == 409 else "no route")
            return None
        from tiled.client.utils import handle_error

        handle_error(response)
        answer: dict[str, Any] = response.json()
        return answer

    def close(self) -> None:
        pass
