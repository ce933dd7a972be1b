"""Reprocessing at scale: procedures in a validated configuration file, analyses as plugins, a
task graph run on Dask, lineage skip (strict or loose), staleness."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..core._lazy import lazy_exports

_EXPORTS = {
    "ANALYSES_ENTRY_POINT_GROUP": "._analyses",
    "AnalysisPlugin": "._analyses",
    "find_analysis": "._analyses",
    "Campaign": "._procedures",
    "load_campaign": "._procedures",
    "ReprocessReport": "._report",
    "reprocess": "._reprocess",
}

if not TYPE_CHECKING:  # mypy reads the names from the imports below (a star import too)
    __all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:
    from ._analyses import ANALYSES_ENTRY_POINT_GROUP, AnalysisPlugin, find_analysis
    from ._procedures import Campaign, load_campaign
    from ._report import ReprocessReport
    from ._reprocess import reprocess
