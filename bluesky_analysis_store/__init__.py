"""Save derived (analysis) data into a Tiled catalog of Bluesky runs as event-model documents.

The public API is re-exported here and imported lazily, so ``import bluesky_analysis_store`` stays
cheap enough for an IPython profile that imports it at every start.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from .core._lazy import lazy_exports
from .core._version import __version__

#: The subpackages, bottom layer first; each lists its public names once, in its ``_EXPORTS``,
#: and the package re-exports them all (importing a subpackage's ``__init__`` is cheap: it
#: imports nothing but the lazy loader).
_SUBPACKAGES = (
    "core",
    "pairs",
    "provenance",
    "compose",
    "insert",
    "store",
    "runengine",
    "reprocessing",
    "exchange",
    "server",
    "cli",
    "examples",
)
#: Public in their subpackage but not here: ``bas``'s entry point.
_NOT_REEXPORTED = frozenset({"main"})

_EXPORTS = {
    name: f".{subpackage}"
    for subpackage in _SUBPACKAGES
    for name in getattr(importlib.import_module(f".{subpackage}", __name__), "__all__", ())
    if name not in _NOT_REEXPORTED
}

if not TYPE_CHECKING:  # mypy reads the names from the star imports below
    __all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)


if TYPE_CHECKING:
    from .cli import *  # noqa: F403
    from .compose import *  # noqa: F403
    from .core import *  # noqa: F403
    from .examples import *  # noqa: F403
    from .exchange import *  # noqa: F403
    from .insert import *  # noqa: F403
    from .pairs import *  # noqa: F403
    from .provenance import *  # noqa: F403
    from .reprocessing import *  # noqa: F403
    from .runengine import *  # noqa: F403
    from .store import *  # noqa: F403
