"""What a campaign did (or, dry, would do): per procedure and per task, and as a table."""

from __future__ import annotations

from dataclasses import dataclass, field

from ._status import StaleRun, TaskState
from ._worker import TaskOutcome

#: The columns of the summary, in order.
COLUMNS = ("tasks", "stored", "loose", "stale", "to run", "ran", "failed", "skipped")


@dataclass
class ProcedureSummary:
    """The counts of one procedure: its tasks; at planning, how many were stored (skipped),
    loosely matched, stale (stored runs replaced) and to run; after running, how many ran,
    failed or were skipped (a task they read failed)."""

    procedure: str
    tasks: int = 0
    stored: int = 0
    loose: int = 0
    stale: int = 0
    to_run: int = 0
    ran: int = 0
    failed: int = 0
    skipped: int = 0

    def row(self) -> list[int]:
        """The counts in :data:`COLUMNS` order."""
        return [
            self.tasks,
            self.stored,
            self.loose,
            self.stale,
            self.to_run,
            self.ran,
            self.failed,
            self.skipped,
        ]


@dataclass
class ReprocessReport:
    """What :func:`reprocess` planned and did.

    Parameters
    ----------
    campaign : str
    dry_run : bool
        Nothing ran: ``outcomes`` is empty.
    states : dict
        ``{task key: TaskState}``: what the store held for each task before it ran.
    outcomes : dict
        ``{task key: TaskOutcome}``: what became of each task (stored tasks included).
    left_out : dict
        ``{procedure: [why, ...]}``: inputs no group took (no sample uuid, no scan id).
    dashboard : str or None
        The Dask dashboard's address, while it ran.
    seconds : float
        Wall time, planning included.
    procedures : tuple of str
        The campaign's procedures in order, those with no task (their query found no run) too.
    """

    campaign: str
    dry_run: bool
    states: dict[str, TaskState]
    outcomes: dict[str, TaskOutcome] = field(default_factory=dict)
    left_out: dict[str, list[str]] = field(default_factory=dict)
    dashboard: str | None = None
    seconds: float = 0.0
    procedures: tuple[str, ...] = ()

    def summary(self) -> dict[str, ProcedureSummary]:
        """``{procedure: ProcedureSummary}`` in the campaign's order (a procedure with no task
        too: a query that found nothing shows as 0 tasks, not as nothing)."""
        summaries = {name: ProcedureSummary(name) for name in self.procedures}
        for key, state in self.states.items():
            row = summaries.setdefault(state.task.procedure, ProcedureSummary(state.task.procedure))
            row.tasks += 1
            row.stale += len(state.stale)
            if state.status == "stored":
                row.stored += 1
            elif state.status == "loose":
                row.loose += 1
            else:
                row.to_run += 1
            outcome = self.outcomes.get(key)
            if outcome is not None and outcome.status in ("ran", "failed", "skipped"):
                setattr(row, outcome.status, getattr(row, outcome.status) + 1)
            elif outcome is not None and state.status == "to_run":  # its worker found it
                row.to_run -= 1  # stored meanwhile (another campaign), or after a task that
                row.stored += 1  # ran found its lineage stored: it cost a lookup
        return summaries

    @property
    def stale(self) -> list[StaleRun]:
        """Every stored run the campaign replaces (or would)."""
        return [run for state in self.states.values() for run in state.stale]

    @property
    def failed(self) -> list[TaskOutcome]:
        """The tasks that failed (each recorded in ``store.failed_analyses()``)."""
        return [o for o in self.outcomes.values() if o.status == "failed"]

    @property
    def skipped(self) -> list[TaskOutcome]:
        """The tasks not run because a task they read failed."""
        return [o for o in self.outcomes.values() if o.status == "skipped"]

    @property
    def loose_matches(self) -> list[TaskState]:
        """The tasks answered by a loose match, with what was ignored."""
        return [s for s in self.states.values() if s.status == "loose"]

    def uid(self, key: str) -> str | None:
        """The run a task saved or reused (None: it failed, was skipped, or did not run)."""
        outcome = self.outcomes.get(key)
        if outcome is not None:
            return outcome.uid if outcome.status in ("ran", "stored", "loose") else None
        return self.states[key].uid

    def table(self) -> str:
        """The summary as a text table, one row per procedure."""
        header: list[object] = ["procedure", *COLUMNS]
        if self.dry_run:
            header = header[:6]
        rows: list[list[object]] = [
            [name, *s.row()][: len(header)] for name, s in self.summary().items()
        ]
        widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
        lines = [
            "  ".join(
                str(cell).ljust(w) if i == 0 else str(cell).rjust(w)
                for i, (cell, w) in enumerate(zip(row, widths, strict=True))
            )
            for row in [header, *rows]
        ]
        notes = []
        for state in self.loose_matches:
            notes.append(
                f"{state.task.key}: reused {state.uid} loosely ({', '.join(state.ignored)})"
            )
        for outcome in self.failed:
            notes.append(f"{outcome.key}: failed: {outcome.reason}")
        for outcome in self.skipped:
            notes.append(f"{outcome.key}: skipped: {outcome.reason}")
        for procedure, reasons in self.left_out.items():
            notes.extend(f"{procedure}: left out: {why}" for why in reasons)
        return "\n".join(lines + notes)
