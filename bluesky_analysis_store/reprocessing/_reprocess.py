"""``reprocess(config, store)``: plan a campaign, skip what is stored, run the rest on Dask."""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

from ..core._environment import API_KEY_ENV
from ..core._errors import NotFoundError
from ..core._paths import NULL_STORE, is_server_uri, store_scheme
from ._execute import dask_client, run_here, run_on_dask
from ._procedures import Campaign, load_campaign
from ._report import ReprocessReport
from ._status import TaskState, resolve_tasks
from ._tasks import build_task_graph
from ._worker import StoreAddress, TaskOutcome, TaskPayload


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class _Progress:
    """A progress bar per procedure: done (ran), stored, loose, failed, skipped, running, and
    pending (planned to run, not started yet)."""

    def __init__(self, report: ReprocessReport, shown: bool) -> None:
        from tqdm import tqdm

        self._procedure = {key: state.task.procedure for key, state in report.states.items()}
        # a task planned to run may end "stored" (its worker found it saved meanwhile): it is
        # no longer pending either
        self._planned = {key: state.status == "to_run" for key, state in report.states.items()}
        counts = report.summary()
        self._bars = {
            name: tqdm(total=row.tasks, desc=name, position=i, unit="task", disable=not shown)
            for i, (name, row) in enumerate(counts.items())
        }
        self._counts = {
            name: dict.fromkeys(("ran", "stored", "loose", "failed", "skipped"), 0)
            for name in counts
        }
        self._todo = {name: row.to_run for name, row in counts.items()}
        self._running: dict[str, set[str]] = {name: set() for name in counts}
        self._done: set[str] = set()  # a start may arrive after its outcome (another route)
        # starts arrive on the Dask client's event loop, outcomes on the caller's thread
        self._lock = threading.Lock()

    def started(self, key: str) -> None:
        """A task began on a worker."""
        with self._lock:
            name = self._procedure.get(key)
            if name is None or key in self._done:
                return
            self._running[name].add(key)
            self._show(name, refresh=True)

    def __call__(self, outcome: TaskOutcome) -> None:
        with self._lock:
            name = self._procedure[outcome.key]
            self._done.add(outcome.key)
            self._counts[name][outcome.status] += 1
            if self._planned[outcome.key]:
                self._todo[name] -= 1
            self._running[name].discard(outcome.key)
            self._show(name, refresh=False)
            self._bars[name].update(1)  # draws it

    def _show(self, name: str, *, refresh: bool) -> None:
        running = len(self._running[name])
        self._bars[name].set_postfix(
            {
                **{k: v for k, v in self._counts[name].items() if v},
                "running": running,
                "pending": self._todo[name] - running,
            },
            refresh=refresh,
        )

    def close(self) -> None:
        for bar in self._bars.values():
            bar.close()


def _check_raw_catalog(address: StoreAddress) -> None:
    """Raise :class:`NotFoundError` when the store has no raw catalog of that name (opening it
    to write would create an empty one, and a misspelt ``--raw`` would find nothing)."""
    probe = address.opened(read_only=True)
    try:
        if probe.raw is None:
            raise NotFoundError(
                f"the store {address.target} has no raw catalog {address.raw!r} (check --raw); "
                "nothing was written"
            )
    finally:
        probe.close()


def reprocess(
    config: str | Path | Campaign,
    store: str | Path,
    *,
    raw: str | None = None,
    root: str | Path | None = None,
    api_key: str | None = None,
    workers: int | None = None,
    scheduler: str | None = None,
    dry_run: bool = False,
    progress: bool = False,
    say: Callable[[str], None] = _say,
) -> ReprocessReport:
    """Run the procedures of ``config`` over the raw catalog into ``store``; see ``bas
    reprocess``.

    Every task's lineage is looked up first: what is stored is skipped and its uid reused
    downstream (strictly, or loosely where a procedure allows it); the rest runs on Dask, each
    task as soon as the tasks it reads are done, and saves its result with provenance. A
    failing task is recorded (``store.failed_analyses()``) and the tasks that read it are
    skipped; the rest goes on. Killed and run again, a campaign redoes only what is missing.

    Parameters
    ----------
    config : path or Campaign
        The procedure file (YAML; see :func:`load_campaign`), validated before anything runs.
    store : path or URI
        Where results go: an embedded store's directory (its local server is shared with the
        workers) or a ``bas serve`` URI (the workers insert into it directly). ``null:STORE``
        rehearses the campaign: the raw runs (``raw``) are read from STORE (read-only), every
        task runs and its result is checked as a save checks it, and nothing is kept (a
        procedure that reads another procedure's results fails: there is nothing to read).
    raw : str, optional
        The raw catalog's container in the store's tiled tree (e.g. ``"raw"``).
    root : path, optional
        For a served store: where derived files are written (its readable storage).
    api_key : str, optional
        For a served store (default: ``$BAS_API_KEY``); the workers get it too.
    workers : int, optional
        Worker processes of a new ``LocalCluster`` (default: one per core); 0 runs every
        task in this process, without Dask.
    scheduler : str, optional
        The address of a running Dask scheduler (``tcp://host:8786``) instead of a new
        cluster; its workers must be able to import the analyses and reach the store.
    dry_run : bool
        Plan only: the report says, per procedure, how many tasks are stored, loose, stale and
        to run; nothing runs and nothing is written.
    progress : bool
        Show a progress bar per procedure, and the Dask dashboard's address.
    say : callable
        Where the dashboard's address is told (default: standard error).

    Returns
    -------
    ReprocessReport

    Raises
    ------
    ProcedureError
        The procedure file is invalid (every problem listed); nothing ran.
    NotFoundError
        ``store`` is a directory that does not exist (opening it would make an empty store),
        or it has no raw catalog named ``raw``.
    """
    began = time.monotonic()
    campaign = config if isinstance(config, Campaign) else load_campaign(config)
    served = is_server_uri(str(store))
    rehearsal = store_scheme(str(store)) == "null"
    if rehearsal:  # null:SOURCE: a rehearsal over the raw runs of the store at SOURCE
        source = str(store)[len(NULL_STORE) :]
        served = is_server_uri(source)
        store = NULL_STORE + (source if served or not source else str(Path(source).resolve()))
        if not source or (not served and not Path(source).is_dir()):
            raise NotFoundError(
                f"no store to read raw runs from in {store!r}: a rehearsal names it, "
                "null:STORE (e.g. --store null:./analysis-store --raw raw); nothing ran"
            )
    elif not served and not Path(store).is_dir():
        # opening would create an empty store (and raw catalog): nothing to reprocess there
        raise NotFoundError(
            f"no analysis store at {store}: reprocessing reads the raw catalog of an existing "
            "store (check --store)"
        )
    address = StoreAddress(
        str(store) if served or rehearsal else str(Path(store).resolve()),
        None if root is None else str(root),
        raw,
        api_key if api_key is not None else os.environ.get(API_KEY_ENV),
    )
    if raw is not None:
        _check_raw_catalog(address)
    with ExitStack() as stack:
        stack.callback(address.close)
        opened = address.open()
        graph = build_task_graph(campaign, opened.raw)
        states = resolve_tasks(graph, opened)
        report = ReprocessReport(
            campaign.name,
            dry_run,
            states,
            left_out=graph.left_out,
            procedures=tuple(campaign.procedures),
        )
        if dry_run:
            report.seconds = time.monotonic() - began
            return report

        def payload(state: TaskState) -> TaskPayload:
            procedure = campaign.procedures[state.task.procedure]
            return TaskPayload(
                key=state.task.key,
                campaign=campaign.name,
                procedure=procedure.name,
                analysis=procedure.spec.analysis,
                parameters=procedure.parameters,
                # a list for a group, and for a per-run procedure that reads several
                # procedures (their outputs of the same raw run), not just the first of them
                group=procedure.spec.per != "run" or len(procedure.upstream) > 1,
                raw_parents=state.task.raw_parents,
                retries=procedure.retries,
                supersedes=tuple(run.uid for run in state.stale),
                store=address,
            )

        bars = _Progress(report, progress)
        stack.callback(bars.close)
        if workers == 0 or all(s.status != "to_run" for s in states.values()):
            report.outcomes = run_here(graph, states, payload, bars)  # nothing for Dask to do
        else:
            with dask_client(workers, scheduler) as client:
                report.dashboard = client.dashboard_link
                if progress:
                    say(f"Dask dashboard: {report.dashboard}")
                report.outcomes = run_on_dask(client, graph, states, payload, bars)
    report.seconds = time.monotonic() - began
    return report
