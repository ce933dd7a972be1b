"""The store: catalog setup and its tiled app, ``AnalysisStore``, queries, the lineage graph,
locks, fsck and quarantine."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..core._lazy import lazy_exports

_EXPORTS = {
    "FsckReport": "._fsck",
    "check_store": "._fsck",
    "repair": "._fsck",
    "AnalysisName": "._queries",
    "AnalysisVersion": "._queries",
    "ContentHash": "._queries",
    "DerivedFrom": "._queries",
    "ExitStatus": "._queries",
    "LineageHash": "._queries",
    "SampleUUID": "._queries",
    "Supersedes": "._queries",
    "AnalysisStore": "._store",
    "BackgroundStore": "._background",
    "JsonlStore": "._jsonl_store",
    "NullStore": "._null_store",
}

if not TYPE_CHECKING:  # mypy reads the names from the imports below (a star import too)
    __all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:
    from ._background import BackgroundStore
    from ._fsck import FsckReport, check_store, repair
    from ._jsonl_store import JsonlStore
    from ._null_store import NullStore
    from ._queries import (
        AnalysisName,
        AnalysisVersion,
        ContentHash,
        DerivedFrom,
        ExitStatus,
        LineageHash,
        SampleUUID,
        Supersedes,
    )
    from ._store import AnalysisStore
