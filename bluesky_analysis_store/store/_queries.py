"""Queries people ask of an analysis store, as tiled query objects (combinable with tiled's own).

On a ``CatalogOfBlueskyRuns`` container keys are relative to the start document, so these read
the top-level provenance copies that every analysis run carries.
"""

from __future__ import annotations

from typing import Any


def DerivedFrom(uid: str) -> Any:  # noqa: N802 - a query constructor, like tiled's Key/Eq
    """Runs whose ``parent_uids`` include ``uid``."""
    from tiled.queries import Contains

    return Contains("start.parent_uids", uid)


def LineageHash(lineage_hash: str) -> Any:  # noqa: N802
    """Runs of exactly this analysis, version, parameters and parents (see ``lineage_hash``)."""
    from tiled.queries import Eq

    return Eq("start.lineage_hash", lineage_hash)


def ContentHash(content_hash: str) -> Any:  # noqa: N802
    """Runs holding exactly this metadata and data (see ``content_hash``)."""
    from tiled.queries import Eq

    return Eq("start.content_hash", content_hash)


def SampleUUID(sample_uuid: str) -> Any:  # noqa: N802
    """Runs of one sample (its ``SA-`` uuid)."""
    from tiled.queries import Eq

    return Eq("start.sample_uuid", sample_uuid)


def AnalysisName(name: str) -> Any:  # noqa: N802
    """Runs produced by the analysis of this name."""
    from tiled.queries import Eq

    return Eq("start.analysis_name", name)


def AnalysisVersion(version: str) -> Any:  # noqa: N802
    """Runs produced by this analysis version (combine with :func:`AnalysisName`)."""
    from tiled.queries import Eq

    return Eq("start.analysis_version", version)


def ExitStatus(status: str) -> Any:  # noqa: N802
    """Runs whose stop document says ``exit_status == status`` (``"success"``, ``"fail"``,
    ``"abort"``); a run without a stop document (still being written, or cut off) matches
    none."""
    from tiled.queries import Eq

    return Eq("stop.exit_status", status)
