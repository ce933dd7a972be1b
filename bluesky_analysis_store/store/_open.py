"""Opening an analysis store: embedded (a directory), served (a URI) or on a tiled client.

``AnalysisStore.open`` is :func:`open_store`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from ..core._errors import AnalysisStoreError
from ..core._paths import JSONL_PREFIX, NULL_STORE, is_server_uri, store_scheme
from ..pairs._pairs import PairRegistry
from ._catalog import embedded_tree, in_process_client, raw_container, runs_container
from ._local_server import connect, read_state, use_local_server
from ._locks import hold_embedded_store, release_embedded_store

if TYPE_CHECKING:
    from ..compose._store_protocol import Store
    from ._store import AnalysisStore


def open_store(
    target: str | Path | Any,
    api_key: str | None = None,
    *,
    root: str | Path | None = None,
    registry: PairRegistry | None = None,
    raw: str | Any = None,
    spool: str | Path | bool | None = None,
    read_only: bool = False,
    local_server: bool | None = None,
    structure_clients: Any = None,
) -> AnalysisStore:
    """Open (or create) an analysis store.

    Parameters
    ----------
    target : path, URI or tiled client
        ``"null:"``: the null store (checks every save, keeps nothing; ``"null:SOURCE"``
        reads its raw catalog ``raw`` from the store at SOURCE, read-only). ``"jsonl:DIR"``
        (or a directory holding one): the JSONL directory store, without tiled. A
        directory: the embedded default (SQLite catalog, local files; created on first use
        and reopened with everything still there), reached through its local server, which
        the first process to open it starts and every process shares (see ``local_server``).
        An ``http(s)://`` URI: a tiled server (``bas serve``). A tiled client or container.
    api_key : str, optional
        For a server; never stored in documents or files.
    root : path, optional
        Where derived files go. Default for a directory: ``DIRECTORY/files``. Required for a
        server or a client: a directory that the server lists in its readable storage.
    registry : PairRegistry, optional
        Writer/handler pairs (default: every installed pair).
    raw : str or client, optional
        The raw catalog: a client, or the name of a ``CatalogOfBlueskyRuns`` container in
        the same tiled tree (created if missing), e.g. ``"raw"`` for an embedded session.
    spool : path or bool, optional
        The durable local spool (see :class:`AnalysisStore`). Default: ``ROOT/.bas-spool``
        for a server or a client, none for an embedded store (in-process: nothing to lose
        the connection to). ``False``: no spool.
    read_only : bool
        Create nothing: no store directory, no container (a missing raw catalog is None),
        no lock file; ``save``, ``insert`` and ``replay`` raise. Works with the read-only
        key of ``bas serve``.
    local_server : bool, optional
        For a directory: True (the default, unless ``$BAS_LOCAL_SERVER`` is ``0``) reaches the
        store through its local server on 127.0.0.1, started if none is running and stopped
        once no process has had the store open for ``$BAS_LOCAL_SERVER_IDLE`` seconds (300),
        so that several processes can use the store at once. False serves it in this process,
        which then holds it alone (:class:`StoreInUseError` elsewhere) until it is closed.
        A read-only open of a directory this user cannot write, with no server running, is
        served in this process.
    structure_clients : optional
        tiled's ``structure_clients`` for the runs' clients (default: bluesky-tiled-plugins'
        ``CatalogOfBlueskyRuns`` and ``BlueskyRun``). The ``bas`` commands that read a few
        runs pass tiled's plain classes (:func:`._reading_clients.reading_clients`), which
        import in a fraction of the time.
    """
    from ._store import AnalysisStore  # which opens with this module

    other = _open_without_tiled(target, api_key, root, registry, raw, read_only, local_server)
    if other is not None:
        # typed as the tiled store for the callers that know which store they open; a null
        # or JSONL store satisfies the Store protocol (what LiveAnalysis, the analyze plan and
        # reprocessing use), not the tiled store's own members (runs, spool, lineage ...)
        return cast("AnalysisStore", other)
    if isinstance(target, str | Path) and not is_server_uri(target):
        directory = Path(target).resolve()
        if use_local_server(local_server) and _may_start_a_server(directory, read_only):
            opened = open_local(directory, root, raw, read_only, structure_clients)
            if spool is None or spool is True:
                from ..insert._spool import SPOOL_DIRECTORY

                spool = opened.root / SPOOL_DIRECTORY
        else:
            opened = open_embedded(directory, root, raw, read_only, structure_clients)
            spool = spool if isinstance(spool, str | Path) else None  # default: none, in-process
    else:
        if root is None:
            raise AnalysisStoreError(
                "root= is required for a served store: a directory the tiled server can read "
                "(one of its readable_storage paths), where derived files are written"
            )
        if spool is None or spool is True:
            from ..insert._spool import SPOOL_DIRECTORY

            spool = Path(root) / SPOOL_DIRECTORY
        opened = open_served(target, api_key, root, raw, read_only, structure_clients)
    return AnalysisStore(
        opened.runs,
        opened.root,
        registry=registry,
        raw=opened.raw,
        context=opened.context,
        spool=spool or None,
        embedded_directory=opened.embedded_directory,
        read_only=read_only,
        lineage_index=opened.lineage_index,
    )


def _open_without_tiled(
    target: Any,
    api_key: str | None,
    root: str | Path | None,
    registry: PairRegistry | None,
    raw: Any,
    read_only: bool,
    local_server: bool | None,
) -> Store | None:
    """A null store (``null:``, ``null:SOURCE``) or a JSONL store (``jsonl:DIR``, or a directory
    holding one), else None."""
    scheme = store_scheme(target)
    if scheme == "null":
        from ._null_store import NullStore

        source = str(target)[len(NULL_STORE) :]
        if not source:  # a raw catalog given as a client, or none
            return NullStore(registry=registry, raw=None if isinstance(raw, str) else raw)
        # the raw runs of the store at SOURCE, read-only (nothing is created there)
        opened = open_store(
            source, api_key, root=root, raw=raw or "raw", read_only=True, local_server=local_server
        )
        return NullStore(registry=registry, raw=opened.raw, context=opened)
    directory = None
    if scheme == "jsonl":
        directory = Path(str(target)[len(JSONL_PREFIX) :])
    elif isinstance(target, str | Path) and not is_server_uri(target):
        from ._jsonl_store import is_jsonl_store

        if is_jsonl_store(target):
            directory = Path(target)
    if directory is None:
        return None
    from ._jsonl_store import JsonlStore

    # a JSONL store has no raw catalog of its own: a client given as raw= is read
    return JsonlStore(
        directory, registry=registry, raw=None if isinstance(raw, str) else raw, read_only=read_only
    )


@dataclass(frozen=True)
class OpenedCatalog:
    """What opening a store's catalog gives: its containers, its file root, what to release at
    close (``context.close()``: the HTTP connections or the in-process app, and the hold on an
    embedded store), and an embedded store's directory."""

    runs: Any
    root: Path
    raw: Any
    context: Any
    embedded_directory: Path | None = None
    lineage_index: Any = None


@dataclass
class InProcessStore:
    """An embedded store served in this process: its app's context and the hold on the
    directory, released together."""

    context: Any
    directory: Path

    def close(self) -> None:
        try:
            self.context.close()
        finally:
            release_embedded_store(self.directory)


def _may_start_a_server(directory: Path, read_only: bool) -> bool:
    """May this open go through the local server? Not for a read-only open of a directory this
    user cannot write, unless a server is running already (it could not start one)."""
    import os

    if not read_only or read_state(directory) is not None:
        return True
    return directory.is_dir() and os.access(directory, os.W_OK)


def _prepare_directory(directory: Path, root: str | Path | None, read_only: bool) -> Path:
    """The embedded store's root of derived files (checked: inside ``DIRECTORY/files``), the
    directory made unless the open is read-only and there is no store."""
    from ._containment import embedded_files_root

    files = embedded_files_root(directory, root)  # the store serves nothing outside
    if read_only and not (directory / "catalog.db").is_file():
        raise AnalysisStoreError(
            f"no analysis store in {directory} (no catalog.db); nothing was created "
            "(the store was opened read-only)"
        )
    directory.mkdir(parents=True, exist_ok=True)
    return files


def _embedded_catalog(
    directory: Path, files: Path, client: Any, raw: Any, read_only: bool, release: Any
) -> OpenedCatalog:
    """An embedded store's containers on ``client``, and its lineage index read from the
    catalog file in this process (no request); ``release.close()`` if they cannot be had."""
    from ._lineage_reader import SqliteReader

    try:
        runs = runs_container(client, create=not read_only)
        raw_runs = raw_container(client, raw, read_only=read_only)
    except BaseException:
        release.close()
        raise
    index = SqliteReader(directory / "catalog.db", list(runs.path_parts))
    return OpenedCatalog(runs, files, raw_runs, release, directory, index)


def open_local(
    directory: Path,
    root: str | Path | None,
    raw: Any,
    read_only: bool,
    structure_clients: Any = None,
) -> OpenedCatalog:
    """The embedded store in ``directory`` through its local server (started if none runs; see
    :mod:`._local_server`)."""
    files = _prepare_directory(directory, root, read_only)
    connection = connect(directory, structure_clients)
    return _embedded_catalog(directory, files, connection.client, raw, read_only, connection)


def open_embedded(
    directory: Path,
    root: str | Path | None,
    raw: Any,
    read_only: bool,
    structure_clients: Any = None,
) -> OpenedCatalog:
    """The embedded store in ``directory``: its SQLite catalog served in this process, the
    directory held by this process until the store is closed."""
    directory = directory.resolve()
    files = _prepare_directory(directory, root, read_only)
    hold_embedded_store(directory)
    try:
        tree = embedded_tree(directory, read_only=read_only)
        context, client = in_process_client(tree, structure_clients)
    except BaseException:
        release_embedded_store(directory)
        raise
    store = InProcessStore(context, directory)
    return _embedded_catalog(directory, files, client, raw, read_only, store)


def open_served(
    target: str | Any,
    api_key: str | None,
    root: str | Path,
    raw: Any,
    read_only: bool,
    structure_clients: Any = None,
) -> OpenedCatalog:
    """The store on a tiled server (``target`` is its URI) or on a tiled client or container."""
    context = None
    if isinstance(target, str):
        from tiled.client import from_uri

        client = from_uri(target, structure_clients or "numpy", api_key=api_key)
        context = client.context  # ours to close
    else:
        client = target
    return OpenedCatalog(
        runs_container(client, create=not read_only),
        Path(root),
        raw_container(client, raw, read_only=read_only),
        context,
    )
