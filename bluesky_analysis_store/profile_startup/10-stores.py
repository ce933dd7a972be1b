# ruff: noqa: F821  (an IPython startup file: names flow between files)
# mypy: ignore-errors
"""10-stores: open the analysis store; route raw scans and analysis runs to their catalogs.

Settings come from environment variables; an API key is never written in a file.

``BAS_STORE``
    A store directory (embedded: SQLite, shared with other processes through its local server;
    created on first use) or the
    ``http(s)://`` URI of a served store (``bas serve``). Default: ``./bas-store``.
``BAS_API_KEY``
    The served store's API key.
``BAS_ROOT``
    Where derived files are written. Default for a directory: ``BAS_STORE/files``. Required for a
    served store: a directory the server reads (its ``files/``).
``BAS_RAW``
    The raw catalog: the name of a ``CatalogOfBlueskyRuns`` container in the store's tiled tree
    (default ``raw``, created if missing), or the ``http(s)://`` URI of one on another tiled
    server (a served analysis store refuses runs without provenance, so raw scans cannot go
    into it).
``BAS_RAW_API_KEY``
    The API key of that other server.

Raw scans (start documents without ``provenance``) go to the raw catalog; analysis runs that
plans emit through ``RE`` (with ``provenance``) go to the analysis store.

The store is opened in a background thread (:class:`BackgroundStore`), so the prompt does not
wait for it: the first scan, save or use of ``store`` does. An error while opening is printed at
once.
"""

import atexit
import os
from pathlib import Path

from bluesky_analysis_store import (
    AnalysisStore,
    AnalysisStoreError,
    BackgroundStore,
    analysis_runs_only,
    raw_runs_only,
)
from bluesky_analysis_store.core import API_KEY_ENV, DEFAULT_STORE, STORE_ENV
from bluesky_analysis_store.store._containment import embedded_files_root

_store_target = os.environ.get(STORE_ENV) or DEFAULT_STORE
_served = _store_target.startswith(("http://", "https://"))
if not _served:
    _store_target = str(Path(_store_target).resolve())  # a directory: the embedded store
_raw = os.environ.get("BAS_RAW") or "raw"
if _served and not _raw.startswith(("http://", "https://")):
    raise AnalysisStoreError(
        f"BAS_STORE={_store_target} is a served analysis store, which refuses runs without "
        f"provenance, so raw scans cannot go into its container {_raw!r}: set BAS_RAW to the "
        "http(s):// URI of the raw catalog"
    )
_root = os.environ.get("BAS_ROOT") or None
if _served and _root is None:
    raise AnalysisStoreError(
        f"BAS_STORE={_store_target} is a served analysis store: set BAS_ROOT to a directory the "
        "server reads (its files/), where derived files are written"
    )
_root_where = _root if _served else embedded_files_root(Path(_store_target), _root)
_raw_where = (
    _raw if _raw.startswith(("http://", "https://")) else f"container {_raw!r} of the store"
)


def _open_store():
    """The store and the raw catalog's writer (bluesky-tiled-plugins' import is most of it)."""
    global _raw_writer
    raw = _raw
    if raw.startswith(("http://", "https://")):
        from tiled.client import from_uri

        raw = from_uri(raw, api_key=os.environ.get("BAS_RAW_API_KEY") or None)
        atexit.register(raw.context.close)
    from bluesky_tiled_plugins.writing.tiled_writer import TiledWriter

    opened = AnalysisStore.open(
        _store_target, api_key=os.environ.get(API_KEY_ENV) or None, root=_root, raw=raw
    )
    _raw_writer = TiledWriter(opened.raw)
    opened.registry.handler_registry()  # what the live analysis asks for at the first scan
    return opened


_raw_writer = None
store = BackgroundStore(_open_store, f"the analysis store {_store_target}")
atexit.register(store.close)


def _write_raw(name, doc):
    """The raw catalog's TiledWriter, once the store is open (the first scan waits for it)."""
    store.wait()
    return _raw_writer(name, doc)


# scans -> the raw catalog; analysis runs that plans emit through RE -> the analysis store
raw_subscription = RE.subscribe(raw_runs_only(_write_raw))
analysis_subscription = RE.subscribe(analysis_runs_only(store.insert))

print(
    f"bluesky-analysis-store: analysis store {_store_target} "
    f"(derived files in {_root_where}; raw runs in {_raw_where})"
)
