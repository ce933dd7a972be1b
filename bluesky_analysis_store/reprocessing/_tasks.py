"""The task graph of a campaign: one task per procedure and input run, or per group of them.

A procedure over the raw catalog gets its runs from one search; a procedure over other
procedures gets their tasks. ``per`` groups them: ``run`` (a task each; several procedures'
tasks of the same raw runs are read together), ``sample`` (the runs of one ``sample_uuid``),
``scan_range`` (blocks of ``scan_range`` scan ids: 1-10, 11-20 ...) or ``all`` (one task).
Grouping looks at each task's *roots*, the raw runs it derives from. Runs that cannot be
grouped (no sample uuid, no scan id) are left out and listed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..core._errors import ProcedureError
from ..store._queries import ExitStatus, SampleUUID, search
from ._procedures import Campaign, RawQuery, ResolvedProcedure, dotted_items, iso_timestamp


@dataclass(frozen=True)
class Task:
    """One run of a procedure's analysis.

    Parameters
    ----------
    key : str
        ``procedure[label]``, unique in the campaign.
    procedure : str
    label : str
        The raw run's uid, ``sample SA-...``, ``scans 1-10`` or ``all``.
    raw_parents : tuple of str
        Raw runs it reads.
    upstream : tuple of str
        Keys of the tasks whose outputs it reads.
    roots : tuple of str
        The raw runs it derives from, through its upstream tasks too.
    """

    key: str
    procedure: str
    label: str
    raw_parents: tuple[str, ...]
    upstream: tuple[str, ...]
    roots: tuple[str, ...]


@dataclass
class TaskGraph:
    """The tasks of a campaign, each after the tasks it reads.

    Parameters
    ----------
    campaign : Campaign
    tasks : dict
        ``{key: Task}`` in an order where every task comes after its upstream tasks.
    raw_starts : dict
        The start documents of the raw runs found.
    left_out : dict
        ``{procedure: [why, ...]}``: inputs that could not be grouped.
    """

    campaign: Campaign
    tasks: dict[str, Task]
    raw_starts: dict[str, dict[str, Any]]
    left_out: dict[str, list[str]] = field(default_factory=dict)

    def of(self, procedure: str) -> list[Task]:
        """The tasks of one procedure."""
        return [task for task in self.tasks.values() if task.procedure == procedure]


def raw_queries(query: RawQuery) -> list[Any]:
    """tiled queries for ``query`` on a catalog of runs."""
    from tiled.queries import Comparison, Eq, In

    def one_or_many(key: str, value: Any) -> Any:
        return In(key, list(value)) if isinstance(value, list) else Eq(key, value)

    queries: list[Any] = []
    if query.exit_status is not None:
        queries.append(ExitStatus(query.exit_status))
    if query.plan_name is not None:
        queries.append(one_or_many("start.plan_name", query.plan_name))
    if isinstance(query.scan_id, int):
        queries.append(Eq("start.scan_id", query.scan_id))
    elif query.scan_id is not None:
        queries.append(Comparison("ge", "start.scan_id", query.scan_id[0]))
        queries.append(Comparison("le", "start.scan_id", query.scan_id[1]))
    if query.since is not None:
        queries.append(Comparison("ge", "start.time", iso_timestamp(query.since)))
    if query.until is not None:
        queries.append(Comparison("lt", "start.time", iso_timestamp(query.until)))
    if isinstance(query.sample_uuid, str):
        queries.append(SampleUUID(query.sample_uuid))
    elif query.sample_uuid is not None:
        queries.append(In("start.sample_uuid", query.sample_uuid))
    if query.uids is not None:
        queries.append(In("start.uid", query.uids))
    queries.extend(Eq(f"start.{key}", value) for key, value in dotted_items(query.start))
    return queries


def find_raw_runs(raw: Any, query: RawQuery) -> dict[str, dict[str, Any]]:
    """``{uid: start}`` of the raw runs ``query`` selects, in the catalog's order."""
    runs = search(raw, *raw_queries(query))
    return {uid: dict(run.metadata["start"]) for uid, run in runs.items()}


@dataclass(frozen=True)
class _Unit:
    """What one input contributes to a task: raw runs or upstream tasks, and their roots."""

    label: str
    raw_parents: tuple[str, ...]
    upstream: tuple[str, ...]
    roots: tuple[str, ...]


def _group_key(
    procedure: ResolvedProcedure, unit: _Unit, starts: Mapping[str, Mapping[str, Any]]
) -> tuple[str | None, str]:
    """``(label, why)``: the group ``unit`` belongs to (None: none, and why)."""
    per = procedure.spec.per
    if per == "all":
        return "all", ""
    if per == "run":
        return unit.label, ""
    runs = ", ".join(r[:8] for r in unit.roots)
    if per == "sample":
        samples = {starts[r].get("sample_uuid") for r in unit.roots}
        if len(samples) != 1 or None in samples:
            return None, f"runs {runs}: no single sample_uuid"
        return f"sample {samples.pop()}", ""
    size = procedure.spec.scan_range or 1
    scan_ids = [s for r in unit.roots if isinstance(s := starts[r].get("scan_id"), int)]
    if len(scan_ids) != len(unit.roots):
        return None, f"runs {runs}: no scan_id"
    first = (min(scan_ids) - 1) // size * size + 1
    return f"scans {first}-{first + size - 1}", ""


def _units(graph: TaskGraph, name: str, procedure: ResolvedProcedure, raw: Any) -> list[_Unit]:
    """The inputs of ``procedure``: one unit per raw run, or per set of upstream tasks that
    derive from the same raw runs."""
    query = procedure.spec.inputs.raw
    if query is not None:
        if raw is None:
            raise ProcedureError(
                [
                    f"{procedure.file}: procedure {name!r}: inputs.raw: the store has no raw "
                    "catalog; give one (--raw NAME, or raw= when opening the store)"
                ]
            )
        found = find_raw_runs(raw, query)
        graph.raw_starts.update(found)
        return [_Unit(uid, (uid,), (), (uid,)) for uid in found]
    by_roots: dict[tuple[str, ...], list[Task]] = {}
    for upstream in procedure.upstream:
        for task in graph.of(upstream):
            by_roots.setdefault(task.roots, []).append(task)
    return [
        _Unit(tasks[0].label, (), tuple(t.key for t in tasks), roots)
        for roots, tasks in by_roots.items()
    ]


def build_task_graph(campaign: Campaign, raw: Any) -> TaskGraph:
    """The tasks of ``campaign`` over the raw catalog ``raw``."""
    graph = TaskGraph(campaign, {}, {})
    for name, procedure in campaign.procedures.items():
        groups: dict[str, list[_Unit]] = {}
        for unit in _units(graph, name, procedure, raw):
            label, why = _group_key(procedure, unit, graph.raw_starts)
            if label is None:
                graph.left_out.setdefault(name, []).append(why)
            else:
                groups.setdefault(label, []).append(unit)
        for label, members in groups.items():
            key = f"{name}[{label}]"
            graph.tasks[key] = Task(
                key=key,
                procedure=name,
                label=label,
                raw_parents=tuple(r for m in members for r in m.raw_parents),
                upstream=tuple(u for m in members for u in m.upstream),
                roots=tuple(sorted({r for m in members for r in m.roots})),
            )
    return graph
