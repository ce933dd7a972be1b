"""The demo and the example analyses."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..core._lazy import lazy_exports

_EXPORTS = {
    "ImageProfilePeak": "._analyses",
    "average_curves": "._analyses",
    "normalize_and_bin": "._analyses",
}

if not TYPE_CHECKING:  # mypy reads the names from the imports below (a star import too)
    __all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:
    from ._analyses import ImageProfilePeak, average_curves, normalize_and_bin
