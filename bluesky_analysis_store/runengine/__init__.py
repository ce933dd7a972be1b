"""The RunEngine side: routing, ``LiveAnalysis``, ``AnalysisDevice`` and the ``analyze`` plan."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..core._lazy import lazy_exports

_EXPORTS = {
    "AnalysisDevice": "._device",
    "AnalysisFailure": "._live",
    "CollectedRun": "._live",
    "LiveAnalysis": "._live",
    "analyze": "._plans",
    "analysis_runs_only": "._routing",
    "raw_runs_only": "._routing",
}

if not TYPE_CHECKING:  # mypy reads the names from the imports below (a star import too)
    __all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:
    from ._device import AnalysisDevice
    from ._live import AnalysisFailure, CollectedRun, LiveAnalysis
    from ._plans import analyze
    from ._routing import analysis_runs_only, raw_runs_only
