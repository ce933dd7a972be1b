"""Queries people ask of an analysis store: tiled query objects (combinable with tiled's own)
and the searches :class:`AnalysisStore` answers with them.

On a ``CatalogOfBlueskyRuns`` container keys are relative to the start document, so these read
the top-level provenance copies that every analysis run carries.

Given to :meth:`AnalysisStore.search` (``bas search``), :func:`DerivedFrom` and
:func:`LineageHash` are answered from the catalog's lineage index when it can be asked
(:func:`indexed_question`): the index names the runs, and the search asks for those runs by key
(tiled's ``KeysFilter``) with the other queries. Given to tiled's own ``search`` they are the
plain tiled queries they are built from, a scan of the catalog.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

#: At most this many runs named by the index go into one search (as keys in the request's URL,
#: about 9 KB for 200); a larger answer is searched by scan instead.
KEYS_PER_SEARCH = 200


def DerivedFrom(uid: str) -> Any:  # noqa: N802 - a query constructor, like tiled's Key/Eq
    """Runs whose ``parent_uids`` include ``uid`` (a whole uid)."""
    from tiled.queries import Contains

    return Contains("start.parent_uids", uid)


def Supersedes(uid: str) -> Any:  # noqa: N802
    """Runs that supersede ``uid``: ``bas reprocess`` recomputed it under a new lineage (another
    version, other parameters, a recomputed parent); the old run stays."""
    from tiled.queries import Contains

    from ..core._names import SUPERSEDES_KEY

    return Contains(f"start.{SUPERSEDES_KEY}", uid)


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


def search(runs: Any, *queries: Any) -> Any:
    """The runs of container ``runs`` matching every query."""
    for query in queries:
        runs = runs.search(query)
    return runs


def indexed_question(query: Any) -> tuple[str, dict[str, Any]] | None:
    """The lineage index question (:func:`._lineage_index.answer`) that names the runs a
    :func:`DerivedFrom` or :func:`LineageHash` query matches, whatever their state; None for
    any other query."""
    from tiled.queries import Contains, Eq

    value = getattr(query, "value", None)
    if not isinstance(value, str):
        return None
    if type(query) is Contains and query.key == "start.parent_uids":
        return "descendants", {"uid": value, "include_incomplete": True}
    if type(query) is Eq and query.key == "start.lineage_hash":
        return "with_lineage", {"lineage_hash": value, "include_incomplete": True}
    return None


def keys_of(ask: str, answer: dict[str, Any]) -> list[str]:
    """The run uids in an answer to :func:`indexed_question`'s question."""
    if ask == "descendants":
        return list(dict.fromkeys(child for _, child in answer["edges"]))
    return [uid for uid, _ in answer["runs"]]


def finished(runs: Any, *queries: Any, include_incomplete: bool = False) -> list[str]:
    """Uids of the runs matching every query whose stop says ``success`` (any, if
    ``include_incomplete``: failed analyses and runs still being written or cut off too)."""
    if not include_incomplete:
        queries = (*queries, ExitStatus("success"))
    # not list(...): it would ask the server for the length first, a request of its own
    return [uid for uid in search(runs, *queries)]


def derived_from(
    runs: Any, uid: str, *, recursive: bool = False, include_incomplete: bool = False
) -> list[str]:
    """Uids of the runs whose parents include ``uid`` (its whole subtree if ``recursive``),
    breadth first, each once; see :meth:`AnalysisStore.derived_from`."""
    found: list[str] = []
    frontier = [uid]
    seen = {uid}
    while frontier:
        children = [
            child
            for parent in frontier
            for child in finished(runs, DerivedFrom(parent), include_incomplete=include_incomplete)
            if child not in seen
        ]
        children = list(dict.fromkeys(children))
        seen.update(children)
        found.extend(children)
        frontier = children if recursive else []
    return found


def breadth_first(uid: str, edges: Iterable[tuple[str, str]]) -> list[str]:
    """The runs below ``uid`` along ``(parent, child)`` edges, breadth first, each once (the
    order of :func:`derived_from`; children in the order the edges come)."""
    children: dict[str, list[str]] = {}
    for parent, child in edges:
        children.setdefault(parent, []).append(child)
    found: list[str] = []
    frontier, seen = [uid], {uid}
    while frontier:
        nxt = []
        for parent in frontier:
            for child in children.get(parent, []):
                if child not in seen:
                    seen.add(child)
                    nxt.append(child)
        found.extend(nxt)
        frontier = nxt
    return found
