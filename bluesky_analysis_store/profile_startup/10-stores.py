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
"""

import atexit
import os
from pathlib import Path

from bluesky_tiled_plugins.writing.tiled_writer import TiledWriter

from bluesky_analysis_store import (
    AnalysisStore,
    AnalysisStoreError,
    analysis_runs_only,
    raw_runs_only,
)
from bluesky_analysis_store.core import API_KEY_ENV, DEFAULT_STORE, STORE_ENV

_store_target = os.environ.get(STORE_ENV) or DEFAULT_STORE
if not _store_target.startswith(("http://", "https://")):
    _store_target = str(Path(_store_target).resolve())  # a directory: the embedded store
_raw = os.environ.get("BAS_RAW") or "raw"
if _store_target.startswith(("http://", "https://")) and not _raw.startswith(
    ("http://", "https://")
):
    raise AnalysisStoreError(
        f"BAS_STORE={_store_target} is a served analysis store, which refuses runs without "
        f"provenance, so raw scans cannot go into its container {_raw!r}: set BAS_RAW to the "
        "http(s):// URI of the raw catalog"
    )
_raw_where = _raw
if _raw.startswith(("http://", "https://")):
    from tiled.client import from_uri

    _raw = from_uri(_raw, api_key=os.environ.get("BAS_RAW_API_KEY") or None)
    atexit.register(_raw.context.close)
else:
    _raw_where = f"container {_raw!r} of the store"

store = AnalysisStore.open(
    _store_target,
    api_key=os.environ.get(API_KEY_ENV) or None,
    root=os.environ.get("BAS_ROOT") or None,
    raw=_raw,
)
atexit.register(store.close)

# scans -> the raw catalog; analysis runs that plans emit through RE -> the analysis store
raw_subscription = RE.subscribe(raw_runs_only(TiledWriter(store.raw)))
analysis_subscription = RE.subscribe(analysis_runs_only(store.insert))

print(
    f"bluesky-analysis-store: analysis store {_store_target} "
    f"(derived files in {store.root}; raw runs in {_raw_where})"
)
