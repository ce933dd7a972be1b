"""Composing an analysis run: the per-key layout, writer choice, ``compose_analysis_run``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..core._lazy import lazy_exports

_EXPORTS = {
    "ComposedRun": "._compose",
    "compose_analysis_run": "._compose",
    "Store": "._store_protocol",
}

if not TYPE_CHECKING:  # mypy reads the names from the imports below (a star import too)
    __all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:
    from ._compose import ComposedRun, compose_analysis_run
    from ._store_protocol import Store
