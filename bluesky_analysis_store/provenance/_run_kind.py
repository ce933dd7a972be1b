"""What makes a run an analysis run: the one definition, import-free for routing."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def is_analysis_run(start: Mapping[str, Any]) -> bool:
    """Whether a start document describes an analysis run.

    An analysis run is one whose start document carries ``provenance``. Every run this package
    composes records it (beside its copies ``analysis_name``, ``lineage_hash`` and
    ``parent_uids``), the served store refuses runs without it, and a raw scan never has it,
    whereas a raw scan's metadata may well use a name such as ``analysis_name`` for itself.

    Parameters
    ----------
    start : Mapping
        A run's start document.

    Returns
    -------
    bool
        True for an analysis run, False for a raw scan.
    """
    return "provenance" in start
