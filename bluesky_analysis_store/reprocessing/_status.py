"""What the store already holds for each task: stored (skip), loosely matched, or to run; and
which stored runs the campaign makes stale.

One search per analysis of the campaign reads the start documents of its complete runs and
failure records (:class:`StoredRuns`); everything else is answered from them in memory, so
planning a campaign whose results are all stored costs a few requests, not one per task.

* **Strict** (the default): a task whose lineage hash (analysis, version, parameters, parents)
  is held by a complete run is *stored*: skipped, its uid reused downstream. A task whose
  parents are still to be computed cannot be looked up now: its worker looks it up when they
  are done.
* **Loose** (per procedure, opt-in, strax's ``fuzzy_for``): failing that, a complete run that
  differs only in the version of the named analyses or in the named parameters, anywhere in
  its lineage, is reused; what was ignored is reported.
* **Stale**: the runs in a task's *slot* (the same analysis over the same inputs, by this
  procedure of this campaign or by no campaign) whose lineage is not the one planned: another
  version or other parameters, or parents that are themselves replaced; a run that a stored
  run already supersedes is not stale again. Reprocessing saves new runs that say which runs
  they supersede; the old runs stay.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from ..core._names import REPROCESS_KEY, SUPERSEDES_KEY
from ..provenance._provenance import ParentRun, Provenance, canonical_json
from ._procedures import ResolvedProcedure
from ._tasks import Task, TaskGraph

if TYPE_CHECKING:
    from ..compose._store_protocol import Store

Status = Literal["stored", "loose", "to_run"]


@dataclass(frozen=True)
class StaleRun:
    """A stored run the campaign replaces, and why."""

    uid: str
    procedure: str
    reasons: tuple[str, ...]


@dataclass
class TaskState:
    """What the store holds for one task.

    Parameters
    ----------
    task : Task
    status : {"stored", "loose", "to_run"}
    uid : str or None
        The run reused (stored, loose).
    lineage_hash : str or None
        Known when every parent's uid is (not for a task after one still to run).
    ignored : tuple of str
        What a loose match ignored.
    stale : list of StaleRun
        Runs of its slot it replaces.
    failed_before : list of str
        Failure records of its lineage.
    """

    task: Task
    status: Status
    uid: str | None = None
    lineage_hash: str | None = None
    ignored: tuple[str, ...] = ()
    stale: list[StaleRun] = field(default_factory=list)
    failed_before: list[str] = field(default_factory=list)


class StoredRuns:
    """The start documents of the complete runs and failure records of some analyses."""

    def __init__(self, store: Store, names: Iterable[str]) -> None:
        names = sorted(set(names))
        self.starts: dict[str, dict[str, Any]] = {}
        self.failures: dict[str, list[str]] = {}  # lineage hash -> failure record uids
        self.by_lineage: dict[str, list[str]] = {}
        self.children: dict[str, list[str]] = {}  # parent uid -> its children's uids
        self.superseded: set[str] = set()  # runs a complete run says it supersedes
        if not names:
            return
        for uid, found in store.analysis_starts(names, "success").items():
            self.starts[uid] = dict(found)
        for uid, failed in store.analysis_starts(names, "fail").items():
            self.failures.setdefault(str(failed.get("lineage_hash")), []).append(uid)
        for uid, start in self.starts.items():
            self.by_lineage.setdefault(str(start.get("lineage_hash")), []).append(uid)
            for parent in start.get("parent_uids") or ():
                self.children.setdefault(parent, []).append(uid)
            self.superseded.update(start.get(SUPERSEDES_KEY) or ())


def planned_lineage(procedure: ResolvedProcedure, parents: Iterable[tuple[str, str | None]]) -> str:
    """The lineage hash a task's run will have: its analysis, version and parameters, and its
    parents' ``(uid, lineage_hash)``."""
    provenance = Provenance(
        code=procedure.analysis.code,
        parents=tuple(
            ParentRun(uid=uid, catalog=None, lineage_hash=lineage) for uid, lineage in parents
        ),
        parameters=procedure.parameters,
    )
    return provenance.lineage_hash()


def _provenance_of(start: Mapping[str, Any]) -> Mapping[str, Any]:
    record = start.get("provenance")
    return record if isinstance(record, Mapping) else {}


def _loose_identity(
    name: str,
    version: str | None,
    parameters: Mapping[str, Any],
    parents: list[str],
    versions: frozenset[str],
    ignored_parameters: frozenset[str],
) -> str:
    return canonical_json(
        {
            "analysis": name,
            "version": None if name in versions else version,
            "parameters": {k: v for k, v in parameters.items() if k not in ignored_parameters},
            "parents": sorted(parents),
        }
    )


class _Resolver:
    """Resolves the tasks of a graph in order (each after its upstream tasks)."""

    def __init__(self, graph: TaskGraph, stored: StoredRuns) -> None:
        self.graph = graph
        self.stored = stored
        self.states: dict[str, TaskState] = {}
        self._slots: dict[str, set[str]] = {}
        self._stored_identity: dict[tuple[str, frozenset[str], frozenset[str]], str] = {}

    # --- loose identities -------------------------------------------------------------------

    def _identity_of_run(self, uid: str, versions: frozenset[str], params: frozenset[str]) -> str:
        """A stored run's lineage with the ignored versions and parameters left out (a raw
        run, or a run of an analysis outside the campaign: its uid)."""
        memo = (uid, versions, params)
        if memo in self._stored_identity:
            return self._stored_identity[memo]
        start = self.stored.starts.get(uid)
        if start is None:
            identity = uid
        else:
            record = _provenance_of(start)
            code = record.get("code") or {}
            identity = _loose_identity(
                str(code.get("name")),
                code.get("version"),
                record.get("parameters") or {},
                [self._identity_of_run(p, versions, params) for p in start.get("parent_uids", [])],
                versions,
                params,
            )
        self._stored_identity[memo] = identity
        return identity

    def _identity_of_task(
        self, task: Task, versions: frozenset[str], params: frozenset[str]
    ) -> str:
        procedure = self.graph.campaign.procedures[task.procedure]
        state = self.states.get(task.key)
        if state is not None and state.uid is not None:  # reused: it is that run
            return self._identity_of_run(state.uid, versions, params)
        parents = list(task.raw_parents) + [
            self._identity_of_task(self.graph.tasks[u], versions, params) for u in task.upstream
        ]
        return _loose_identity(
            procedure.analysis.name,
            procedure.analysis.version,
            procedure.parameters,
            parents,
            versions,
            params,
        )

    # --- slots -------------------------------------------------------------------------------

    def _slot(self, task: Task, procedure: ResolvedProcedure) -> set[str]:
        """The stored runs of this procedure's analysis over this task's inputs (any lineage),
        made by this procedure of this campaign or outside any campaign (another campaign's
        runs are its own: two campaigns may keep two resolutions of one analysis)."""
        mine = {"campaign": self.graph.campaign.name, "procedure": task.procedure}
        allowed = set(task.raw_parents)
        for upstream in task.upstream:
            allowed |= self._slots[upstream]
            if (uid := self.states[upstream].uid) is not None:
                allowed.add(uid)
        slot = set()
        for parent in allowed:
            for child in self.stored.children.get(parent, ()):
                start = self.stored.starts[child]
                tag = start.get(REPROCESS_KEY)
                if (
                    start.get("analysis_name") == procedure.analysis.name
                    and set(start.get("parent_uids") or ()) <= allowed
                    and (not tag or tag == mine)
                ):
                    slot.add(child)
        return slot

    def _why_stale(
        self, uid: str, procedure: ResolvedProcedure, replaced_parents: dict[str, str]
    ) -> tuple[str, ...]:
        start = self.stored.starts[uid]
        record = _provenance_of(start)
        reasons = []
        version = (record.get("code") or {}).get("version")
        if version != procedure.analysis.version:
            reasons.append(f"version {version} -> {procedure.analysis.version}")
        parameters = record.get("parameters") or {}
        changed = sorted(
            key
            for key in set(parameters) | set(procedure.parameters)
            if parameters.get(key) != procedure.parameters.get(key)
        )
        reasons.extend(
            f"parameter {key}: {parameters.get(key)!r} -> {procedure.parameters.get(key)!r}"
            for key in changed
        )
        reasons.extend(
            f"parent {p} {replaced_parents[p]}"
            for p in start.get("parent_uids", [])
            if p in replaced_parents
        )
        return tuple(reasons) or ("its inputs changed",)

    # --- resolving ---------------------------------------------------------------------------

    def resolve(self, task: Task) -> TaskState:
        procedure = self.graph.campaign.procedures[task.procedure]
        upstream = [self.states[u] for u in task.upstream]
        state = TaskState(task, "to_run")
        if all(u.uid is not None for u in upstream):
            parents = [(uid, None) for uid in task.raw_parents] + [
                (u.uid, self.stored.starts[u.uid].get("lineage_hash"))
                for u in upstream
                if u.uid is not None
            ]
            state.lineage_hash = planned_lineage(procedure, parents)
            if found := self.stored.by_lineage.get(state.lineage_hash):
                state.status, state.uid = "stored", found[0]
            state.failed_before = list(self.stored.failures.get(state.lineage_hash, []))
        slot = self._slot(task, procedure)
        self._slots[task.key] = slot
        self.states[task.key] = state
        loose = procedure.spec.loose
        if state.status == "to_run" and (loose.versions or loose.parameters):
            self._match_loosely(state, procedure, slot)
        # parents stale now, or superseded already (their replacement saved, this run not
        # yet), and what became of their task
        replaced = dict.fromkeys(self.stored.superseded, "is replaced")
        for u in upstream:
            failed = (
                f", and its task {u.task.key} is recorded as failed ({', '.join(u.failed_before)})"
                if u.failed_before
                else ""
            )
            replaced.update((s.uid, f"is replaced{failed}") for s in u.stale)
        state.stale = [
            StaleRun(uid, task.procedure, self._why_stale(uid, procedure, replaced))
            for uid in sorted(slot)
            if uid != state.uid
            and uid not in self.stored.superseded  # replaced already: not stale again
            and self.stored.starts[uid].get("lineage_hash") != state.lineage_hash
        ]
        return state

    def _match_loosely(
        self, state: TaskState, procedure: ResolvedProcedure, slot: set[str]
    ) -> None:
        versions = frozenset(procedure.spec.loose.versions)
        params = frozenset(procedure.spec.loose.parameters)
        wanted = self._identity_of_task(state.task, versions, params)
        for uid in sorted(slot, key=lambda u: self.stored.starts[u].get("time", 0), reverse=True):
            if self._identity_of_run(uid, versions, params) == wanted:
                state.status, state.uid = "loose", uid
                state.ignored = tuple(
                    [f"version of {name}" for name in sorted(versions)]
                    + [f"parameter {name}" for name in sorted(params)]
                )
                state.lineage_hash = self.stored.starts[uid].get("lineage_hash")
                return


def resolve_tasks(graph: TaskGraph, store: Store) -> dict[str, TaskState]:
    """The state of every task of ``graph`` against what ``store`` holds."""
    names = {p.analysis.name for p in graph.campaign.procedures.values()}
    resolver = _Resolver(graph, StoredRuns(store, names))
    for task in graph.tasks.values():
        resolver.resolve(task)
    return resolver.states
