"""One task, where it runs (a Dask worker): look up its lineage, load its parents, run the
analysis, save the result with its provenance, or record the failure.

Everything a task needs travels in a small :class:`TaskPayload` (names and uids, not
functions): a worker on another host imports the analysis by its reference and opens the
store by its address, once per worker process.
"""

from __future__ import annotations

import logging
import traceback
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from ..core._errors import NotFoundError, RunConflictError
from ..core._names import REPROCESS_KEY, SUPERSEDES_KEY
from ..core._paths import is_server_uri
from ..insert._runs import stored_run
from ..provenance._capture import capture_environment, describe_parent
from ..provenance._provenance import LooseMatch, Provenance
from ..provenance._samples import with_parents_sample
from ._analyses import find_analysis

if TYPE_CHECKING:
    from ..compose._store_protocol import Store

logger = logging.getLogger("bluesky_analysis_store.reprocessing")

Outcome = Literal["ran", "stored", "loose", "failed", "skipped"]

#: The Dask event topic on which a worker says it began a task (its key).
STARTED_TOPIC = "bas-task-started"


@dataclass(frozen=True)
class StoreAddress:
    """How a worker opens the store: what :meth:`AnalysisStore.open` takes (an embedded
    directory is opened through its local server, which every worker shares)."""

    target: str
    root: str | None = None
    raw: str | None = None
    api_key: str | None = field(default=None, repr=False)  # never in a log or the dashboard

    def opened(self, *, read_only: bool = False) -> Store:
        """A new store on this address (the caller closes it)."""
        from ..store._store import AnalysisStore

        return AnalysisStore.open(
            self.target,
            self.api_key,
            root=self.root,
            raw=self.raw,
            read_only=read_only,
            local_server=None if is_server_uri(self.target) else True,
        )

    def open(self) -> Store:
        """The store, opened once per process (a worker keeps it for every task it runs)."""
        store = _OPENED.get(self)
        if store is None:
            store = _OPENED[self] = self.opened()
        return store

    def close(self) -> None:
        """Close the store this process opened (if it did)."""
        store = _OPENED.pop(self, None)
        if store is not None:
            store.close()


#: The stores this process opened, by address (a Dask worker opens each once).
_OPENED: dict[StoreAddress, Store] = {}


@dataclass(frozen=True)
class TaskPayload:
    """What a worker needs to run one task."""

    key: str
    campaign: str
    procedure: str
    analysis: str
    parameters: dict[str, Any]
    group: bool
    raw_parents: tuple[str, ...]
    retries: int
    supersedes: tuple[str, ...]
    store: StoreAddress


@dataclass(frozen=True)
class TaskOutcome:
    """What became of a task.

    Parameters
    ----------
    key : str
    status : {"ran", "stored", "loose", "failed", "skipped"}
        Saved a new run; reused a stored one (strictly, or loosely); failed (recorded);
        skipped because a task it reads failed or was skipped.
    uid : str or None
        The run saved or reused, or the failure record.
    lineage_hash : str or None
    reason : str
        Why it failed or was skipped.
    attempts : int
    ignored : tuple of str
        What a loose match ignored.
    """

    key: str
    status: Outcome
    uid: str | None = None
    lineage_hash: str | None = None
    reason: str = ""
    attempts: int = 0
    ignored: tuple[str, ...] = ()


def run_task(payload: TaskPayload, *upstream: TaskOutcome) -> TaskOutcome:
    """Run one task (on a worker); never raises: a failure of the analysis is recorded in the
    store and returned, as is one to reach the store or the analysis (not recorded: the store
    may be what failed)."""
    blocked = [o for o in upstream if o.status in ("failed", "skipped")]
    if blocked:
        return TaskOutcome(
            payload.key,
            "skipped",
            reason="; ".join(f"{o.key} {o.status}" for o in blocked),
        )
    _say_started(payload.key)
    try:
        with _in_this_thread():
            return _run(payload, upstream)
    except Exception as error:
        logger.exception("%s could not run", payload.key)
        return TaskOutcome(payload.key, "failed", reason=f"{type(error).__name__}: {error}")


def _say_started(key: str) -> None:
    """Tell the client, through the scheduler, that this worker began task ``key`` (for the
    progress bars' "running"); nothing outside a Dask worker."""
    try:
        from distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError):  # not on a worker (run here, without Dask)
        return
    worker.log_event(STARTED_TOPIC, key)


def _in_this_thread() -> Any:
    """A context where Dask computations run in the calling thread (tiled reads arrays as dask
    arrays): on a Dask worker they would go to the cluster through the worker's client,
    which secedes the task's thread (the worker starts another task beside it) and waits for
    the pieces behind other tasks, on any worker."""
    import dask

    return dask.config.set(scheduler="synchronous")


def _run(payload: TaskPayload, upstream: tuple[TaskOutcome, ...]) -> TaskOutcome:
    store = payload.store.open()
    analysis = find_analysis(payload.analysis)
    # each parent is read once, by key in its own catalog: its start document comes with it
    # (not looked up in the analysis catalog, then the raw one, then read: 3 requests)
    parents = list(payload.raw_parents) + [o.uid for o in upstream if o.uid is not None]
    runs = [stored_run(store.raw, uid) for uid in payload.raw_parents] + [
        store.find_run(o.uid) for o in upstream if o.uid is not None
    ]
    starts = [
        {"uid": uid} if run is None else dict(run.metadata["start"])
        for uid, run in zip(parents, runs, strict=True)
    ]
    provenance = Provenance(
        code=analysis.code,
        environment=capture_environment(),
        parents=tuple(describe_parent(start) for start in starts),
        parameters=payload.parameters,
        loose_matches=tuple(
            LooseMatch(uid=o.uid, ignored=o.ignored)
            for o in upstream
            if o.status == "loose" and o.uid is not None
        ),
    )
    lineage = provenance.lineage_hash()
    if saved := store.with_lineage(lineage):  # stored meanwhile, or by a killed campaign
        return TaskOutcome(payload.key, "stored", saved[0], lineage)
    if missing := [uid for uid, run in zip(parents, runs, strict=True) if run is None]:
        raise NotFoundError(f"parent run(s) not in the store: {', '.join(missing)}")
    error: Exception = RuntimeError("not run")  # replaced by the first attempt's error
    for attempt in range(1, payload.retries + 2):
        try:
            data_dicts, md = analysis(runs if payload.group else runs[0], payload.parameters)
            md = with_parents_sample(md, starts)
            if isinstance(md, dict):
                md = {
                    **md,
                    REPROCESS_KEY: {"campaign": payload.campaign, "procedure": payload.procedure},
                    **({SUPERSEDES_KEY: list(payload.supersedes)} if payload.supersedes else {}),
                }
            uid = store.save(data_dicts, md, provenance=provenance)
            return TaskOutcome(payload.key, "ran", uid, lineage, attempts=attempt)
        except RunConflictError as caught:
            # saved meanwhile with other metadata (another campaign's tag): the result of this
            # lineage exists, as if the lookup above had found it
            if saved := store.with_lineage(lineage):
                return TaskOutcome(payload.key, "stored", saved[0], lineage, attempts=attempt)
            error = caught
        except Exception as caught:
            error = caught
            logger.warning("%s: attempt %d failed: %s", payload.key, attempt, caught)
    reason = f"{type(error).__name__}: {error}"
    record = None
    try:
        record = store.record_failure(
            provenance,
            reason,
            md={REPROCESS_KEY: {"campaign": payload.campaign, "procedure": payload.procedure}},
        )
    except Exception:
        logger.exception("%s: could not record the failure", payload.key)
    logger.error(
        "%s failed: %s\n%s", payload.key, reason, "".join(traceback.format_exception(error))
    )
    return TaskOutcome(payload.key, "failed", record, lineage, reason, payload.retries + 1)
