"""A store's tiled catalog: its tree (embedded SQLite or any catalog URI), the in-process app,
and the containers of analysis and raw runs.

``AnalysisStore.open`` and ``bas serve`` set a store up with these; the tests use them to build
the same trees.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

from ..core._errors import AnalysisStoreError

logger = logging.getLogger("bluesky_analysis_store.store")

#: Name of the CatalogOfBlueskyRuns container that holds the analysis runs.
RUNS_CONTAINER = "analysis"
CATALOG_SPEC = ("CatalogOfBlueskyRuns", "3.0")


def catalog_tree(
    catalog_uri: str,
    directory: Path,
    *,
    tables_uri: str | None = None,
    initialize: bool = True,
    read_only: bool = False,
) -> Any:
    """A tiled catalog adapter for an analysis store whose files live under ``directory``.

    A store that was moved or copied has its catalog's recorded paths pointed into
    ``directory``; one reached through another mount point reads its files there (see
    :mod:`._relocation`).

    Parameters
    ----------
    catalog_uri : str
        ``sqlite+aiosqlite:///PATH`` or ``postgresql+asyncpg://USER@HOST:PORT/DB``.
    directory : Path
        Holds ``data/`` (tiled's own array storage) and ``files/`` (derived files, readable by
        tiled); created if missing (resolved).
    tables_uri : str, optional
        tiled's table storage: ``duckdb:////ABS/PATH`` (default: ``DIRECTORY/tables.duckdb``)
        or ``postgresql://USER@HOST:PORT/DB``.
    initialize : bool
        Create the catalog's tables if missing, in this process (:func:`initialize_catalog`).
    read_only : bool
        Change nothing: a moved store's recorded paths are left (and its files unreadable),
        a missing lineage index is not installed (see :mod:`._lineage_index`).
    """
    from tiled.catalog import from_uri

    from ._relocation import locate_store, relocate

    if not read_only:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "data").mkdir(exist_ok=True)
        (directory / "files").mkdir(exist_ok=True)
    location = locate_store(directory, catalog_uri)
    if location.moved and read_only:
        logger.warning(
            "the analysis store in %s records its files under %s, where they are no longer: "
            "they cannot be read until the store is opened for writing once (`bas fsck "
            "--repair` does), which points the recorded paths here",
            directory,
            location.recorded,
        )
    elif (location.moved or location.unrecorded) and not read_only:
        relocate(catalog_uri, location)
    if initialize:
        initialize_catalog(catalog_uri)
    tree = from_uri(
        catalog_uri,
        writable_storage=[
            str(directory / "data"),
            tables_uri or f"duckdb:///{directory / 'tables.duckdb'}",
        ],
        # the same directory reached by the paths the catalog records (another mount point)
        readable_storage=[
            str(directory / "files"),
            *(str(alias / name) for alias in location.aliases for name in ("files", "data")),
        ],
    )
    if not read_only:  # installed where missing (also after a tiled migration dropped it)
        from ._lineage_index import ensure

        ensure(catalog_uri)
    return tree


def initialize_catalog(catalog_uri: str) -> bool:
    """Create the tables of a catalog that has none and stamp tiled's schema revision, in this
    process (as ``tiled serve catalog --temp`` does); True if it was new.

    tiled's ``from_uri(init_if_not_exists=True)`` runs ``python -m tiled catalog init`` instead,
    a subprocess that imports all of tiled again (seconds). A catalog that has tables is left
    as it is (its app's start-up refuses one that needs a migration). Runs in a thread of its
    own: the caller may be inside a running event loop (a notebook cell).
    """
    from tiled.utils import ensure_specified_sql_driver

    from ._relocation import in_thread

    uri = ensure_specified_sql_driver(catalog_uri)
    return in_thread(lambda: _initialize(uri))


async def _initialize(uri: str) -> bool:
    import asyncio

    from sqlalchemy.ext.asyncio import create_async_engine
    from tiled.alembic_utils import UninitializedDatabase, check_database, stamp_head
    from tiled.catalog.alembic_constants import ALEMBIC_DIR, ALEMBIC_INI_TEMPLATE_PATH
    from tiled.catalog.core import ALL_REVISIONS, REQUIRED_REVISION, initialize_database

    engine = create_async_engine(uri)
    try:
        await check_database(engine, REQUIRED_REVISION, ALL_REVISIONS)
        return False
    except UninitializedDatabase:
        await initialize_database(engine)
    finally:
        await engine.dispose()

    def stamp() -> None:
        with warnings.catch_warnings():
            # tiled's alembic.ini template predates alembic's path_separator option
            warnings.filterwarnings("ignore", "No path_separator found", DeprecationWarning)
            stamp_head(ALEMBIC_INI_TEMPLATE_PATH, ALEMBIC_DIR, uri)

    # alembic's stamp runs an event loop of its own, so not in this loop's thread
    await asyncio.to_thread(stamp)
    return True


def embedded_tree(directory: Path, *, read_only: bool = False) -> Any:
    """The tiled catalog adapter of an embedded store in ``directory`` (created on first use).

    Layout: ``catalog.db`` (SQLite), ``data/`` and ``tables.duckdb`` (tiled's own writable
    storage), ``files/`` (derived files, readable by tiled). One process at a time may have it
    open (DuckDB admits one): see :func:`hold_embedded_store`.
    """
    catalog = directory / "catalog.db"
    return catalog_tree(
        f"sqlite+aiosqlite:///{catalog}",
        directory,
        initialize=not catalog.exists(),  # an existing one is checked when its app starts
        read_only=read_only,
    )


def in_process_client(tree: Any, structure_clients: Any = None) -> tuple[Any, Any]:
    """``(context, client)`` of the store's tiled app on ``tree`` (the same app as ``bas
    serve``'s, with its rules: see :func:`build_store_app`), served in process; close the
    context. ``structure_clients``: tiled's (default ``"numpy"``)."""
    import logging

    from tiled.client import Context, from_context

    from ._app import build_store_app

    logging.getLogger("tiled.server.app").setLevel(logging.WARNING)  # no version banner

    with warnings.catch_warnings():
        # starlette's test client (which carries in-process tiled) warns about httpx; harmless
        warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
        # one request at a time: a DuckDB table storage shares one connection (see
        # OneRequestAtATime); in process, nothing gains from more
        context = Context.from_app(build_store_app(tree, one_request_at_a_time=True))
    return context, from_context(context, structure_clients or "numpy")


def _check_catalog(name: str, container: Any) -> Any:
    """``container``, if it is a ``CatalogOfBlueskyRuns``; else an :class:`AnalysisStoreError`."""
    if not any(spec.name == CATALOG_SPEC[0] for spec in container.specs):
        raise AnalysisStoreError(
            f"{name!r} exists in the tiled catalog but is not a CatalogOfBlueskyRuns "
            "container; bluesky queries would be silently ignored there"
        )
    return container


def runs_container(client: Any, name: str = RUNS_CONTAINER, *, create: bool = True) -> Any:
    """The ``CatalogOfBlueskyRuns`` container ``name`` under ``client``, created if missing
    (``create=False``: an :class:`AnalysisStoreError` instead, and nothing is written)."""
    from tiled.structures.core import Spec

    if name in client:
        return _check_catalog(name, client[name])
    if not create:
        raise AnalysisStoreError(
            f"the tiled catalog has no container {name!r} and the store was opened read-only; "
            "nothing has been saved there yet (opening it for writing creates it)"
        )
    return client.create_container(name, specs=[Spec(CATALOG_SPEC[0], version=CATALOG_SPEC[1])])


def create_runs_container_at_start(tree: Any, name: str = RUNS_CONTAINER) -> None:
    """Have the app built on ``tree`` after this call create the ``CatalogOfBlueskyRuns``
    container ``name`` as it starts, before it answers anyone, if it is missing.

    It is the node :func:`runs_container` would create (the same specs, no metadata), made
    through the catalog adapter in the app's own event loop: no first app and client just for
    this. tiled runs a tree's ``startup_tasks`` when its app starts, after checking the
    catalog's database. An existing ``name`` that is not a ``CatalogOfBlueskyRuns`` stops the
    start with an :class:`AnalysisStoreError`.
    """

    async def create() -> None:
        from tiled.server.core import NoEntry
        from tiled.structures.core import Spec, StructureFamily

        try:
            _check_catalog(name, await tree.lookup_adapter([name]))
        except NoEntry:
            spec = Spec(CATALOG_SPEC[0], version=CATALOG_SPEC[1])
            await tree.create_node(StructureFamily.container, {}, key=name, specs=[spec])

    tree.startup_tasks.append(create)


def run_start_up(tree: Any) -> None:
    """Run ``tree``'s start-up tasks (tiled's check of the catalog's database, the runs
    container of :func:`create_runs_container_at_start`), then its shut-down tasks, in this
    process: what its app does as it starts, without serving. ``bas serve --workers`` does it
    once before its workers start, so that none of them has anything left to create."""
    from ._relocation import in_thread

    async def start_and_stop() -> None:
        try:
            for task in tree.startup_tasks:
                await task()
        finally:
            for task in tree.shutdown_tasks:
                await task()

    in_thread(start_and_stop)


def raw_container(client: Any, raw: str | Any, *, read_only: bool = False) -> Any:
    """``open``'s raw catalog: a client as given, or the container named ``raw`` under
    ``client`` (created if missing; read-only: None if missing, so nothing is written)."""
    if not isinstance(raw, str):
        return raw
    if read_only and raw not in client:
        return None
    return runs_container(client, raw, create=not read_only)
