"""Analysis failures as runs: a record made when an analysis fails on its parents, and the
questions it answers ("which runs lack their analysis, and why?")."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, cast

from ..core._errors import AnalysisStoreError
from ..provenance._policy import ProvenancePolicy, enforce_provenance
from ..provenance._provenance import Provenance
from ..provenance._start_metadata import start_metadata
from ._queries import AnalysisName, AnalysisVersion, ExitStatus, finished, search

if TYPE_CHECKING:
    from ..core._documents import RunStart, RunStop


def failure_documents(
    provenance: Provenance | Mapping[str, Any],
    reason: str,
    md: Mapping[str, Any] | None = None,
    policy: ProvenancePolicy | None = None,
) -> list[tuple[str, RunStart | RunStop]]:
    """The documents of a failure record: a start with the provenance (so the same queries find
    it) and a stop with ``exit_status="fail"`` and ``reason``; no data."""
    import event_model

    policy = policy if policy is not None else ProvenancePolicy()
    metadata = start_metadata(md or {}, enforce_provenance(provenance, policy), policy)
    bundle = event_model.compose_run(metadata=metadata)
    stop = bundle.compose_stop(exit_status="fail", reason=reason)
    # copies, as plain dicts (dict() loses the TypedDict)
    return [
        ("start", cast("RunStart", dict(bundle.start_doc))),
        ("stop", cast("RunStop", dict(stop))),
    ]


def failed_analyses(runs: Any, name: str | None = None) -> list[dict[str, Any]]:
    """The failure records in ``runs`` (of analysis ``name``, or all); see
    :meth:`AnalysisStore.failed_analyses`."""
    queries = [ExitStatus("fail")] + ([AnalysisName(name)] if name else [])
    return [failure_record(uid, run.metadata) for uid, run in search(runs, *queries).items()]


def is_failure(metadata: Mapping[str, Any]) -> bool:
    """Is a run with this ``metadata`` (``start`` and ``stop``) a failure record?"""
    return (metadata.get("stop") or {}).get("exit_status") == "fail"


def failure_record(uid: str, metadata: Mapping[str, Any]) -> dict[str, Any]:
    """What :func:`failed_analyses` says of one failure record, from its run's ``metadata``."""
    start, stop = metadata["start"], metadata.get("stop") or {}
    return {
        "uid": uid,
        "analysis_name": start.get("analysis_name"),
        "analysis_version": start.get("analysis_version"),
        "parent_uids": list(start.get("parent_uids", [])),
        "reason": stop.get("reason", ""),
    }


def missing_analysis(
    runs: Any,
    raw: Any,
    name: str,
    raw_uids: Iterable[str] | None = None,
    *,
    version: str | None = None,
    analysed: set[str] | None = None,
) -> list[str]:
    """Which of ``raw_uids`` (default: every run of ``raw``) have no complete run of analysis
    ``name`` (and ``version``) in ``runs`` derived from them, in the given order.

    ``analysed``: the parents of those runs, when the lineage index gave them; otherwise they
    are searched for (each complete run of the analysis read)."""
    if raw_uids is None:
        if raw is None:
            raise AnalysisStoreError(
                "missing_analysis needs raw_uids=... or a store opened with raw=..."
            )
        raw_uids = list(raw)
    if analysed is None:
        queries = [AnalysisName(name)] + ([AnalysisVersion(version)] if version else [])
        analysed = {
            parent
            for uid in finished(runs, *queries)
            for parent in runs[uid].metadata["start"].get("parent_uids", [])
        }
    return [uid for uid in raw_uids if uid not in analysed]
