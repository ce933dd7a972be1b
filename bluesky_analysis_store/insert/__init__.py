"""Inserting runs: one chain per run (spool, idempotence, the document gate, a TiledWriter)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..core._lazy import lazy_exports

_EXPORTS = {
    "DocumentWriteError": "._gate",
    "InvalidDocumentError": "._gate",
    "analysis_tiled_writer": "._tiled_writer",
    "register_tiled_consolidators": "._tiled_writer",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:
    from ._gate import DocumentWriteError, InvalidDocumentError
    from ._tiled_writer import analysis_tiled_writer, register_tiled_consolidators
