"""Inserting runs: one chain per run (spool, idempotence, the document gate, a TiledWriter)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..core._lazy import lazy_exports

_EXPORTS = {
    "DocumentWriteError": "._gate",
    "InvalidDocumentError": "._gate",
    "analysis_sink": "._sink",
    "analysis_tiled_writer": "._sink",  # deprecated: analysis_sink
    "register_tiled_consolidators": "._sink",
}

if not TYPE_CHECKING:  # mypy reads the names from the imports below (a star import too)
    __all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:
    from ._gate import DocumentWriteError, InvalidDocumentError
    from ._sink import analysis_sink, analysis_tiled_writer, register_tiled_consolidators
