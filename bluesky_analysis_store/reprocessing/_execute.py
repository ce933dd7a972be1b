"""Running the tasks on Dask (``dask.distributed``): a ``LocalCluster`` of worker processes
(one per core by default) or an existing cluster's scheduler.

Each task is submitted with its upstream tasks' futures as arguments, so Dask starts it as
soon as those are done, not after the whole procedure. Tasks the store already holds are not
submitted: their outcome is known, and their uid is passed on.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol

from ._status import TaskState
from ._tasks import TaskGraph
from ._worker import STARTED_TOPIC, TaskOutcome, TaskPayload, run_task


class Listener(Protocol):
    """Told when each task starts (on a worker) and with each outcome as it arrives."""

    def started(self, key: str) -> None: ...

    def __call__(self, outcome: TaskOutcome) -> None: ...


@contextmanager
def dask_client(workers: int | None, scheduler: str | None) -> Iterator[Any]:
    """A ``distributed.Client`` on the scheduler at ``scheduler``, or on a new
    ``LocalCluster`` of ``workers`` processes (default: one per core), one thread each
    (analyses are CPU-bound Python: threads would share one interpreter lock)."""
    from distributed import Client, LocalCluster

    if scheduler is not None:
        with Client(scheduler) as client:
            yield client
        return
    with (
        LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address="127.0.0.1:0",
            silence_logs=logging.ERROR,
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


def known_outcome(state: TaskState) -> TaskOutcome | None:
    """The outcome of a task the store already holds (None: it must run)."""
    if state.status == "to_run":
        return None
    return TaskOutcome(
        state.task.key, state.status, state.uid, state.lineage_hash, ignored=state.ignored
    )


def run_on_dask(
    client: Any,
    graph: TaskGraph,
    states: dict[str, TaskState],
    payload: Callable[[TaskState], TaskPayload],
    listener: Listener,
) -> dict[str, TaskOutcome]:
    """Submit every task to run, each with its upstream futures; the outcomes, by task key."""
    from distributed import as_completed

    outcomes: dict[str, TaskOutcome] = {}
    futures: dict[str, Any] = {}
    # each worker says when it begins a task (an event through the scheduler: no polling)
    client.subscribe_topic(STARTED_TOPIC, lambda event: listener.started(event[1]))
    token = uuid.uuid4().hex[:8]  # a rerun's keys are new: Dask keeps results by key
    depth: dict[str, int] = {}
    for key, task in graph.tasks.items():
        # deeper tasks first among those ready: Dask's default (first submitted, first run)
        # would leave a dependent behind every queued task of the procedures it reads
        depth[key] = 1 + max((depth[u] for u in task.upstream), default=0)
        state = states[key]
        if (known := known_outcome(state)) is not None:
            outcomes[key] = known
            listener(known)
            continue
        upstream = [futures.get(u, outcomes.get(u)) for u in task.upstream]
        futures[key] = client.submit(
            run_task,
            payload(state),
            *upstream,
            key=f"{key}-{token}",
            pure=False,
            priority=depth[key],
        )
    try:
        by_future = {future.key: key for key, future in futures.items()}
        for future in as_completed(list(futures.values())):
            key = by_future[future.key]
            try:
                outcome = future.result()
            except Exception as error:  # the worker died (KilledWorker), or Dask failed
                outcome = TaskOutcome(key, "failed", reason=f"{type(error).__name__}: {error}")
            outcomes[key] = outcome
            listener(outcome)
    finally:
        client.unsubscribe_topic(STARTED_TOPIC)
    return {key: outcomes[key] for key in graph.tasks}


def run_here(
    graph: TaskGraph,
    states: dict[str, TaskState],
    payload: Callable[[TaskState], TaskPayload],
    listener: Listener,
) -> dict[str, TaskOutcome]:
    """Run every task in this process, in order (``workers=0``: no Dask)."""
    outcomes: dict[str, TaskOutcome] = {}
    for key, task in graph.tasks.items():
        state = states[key]
        outcome = known_outcome(state)
        if outcome is None:
            listener.started(key)
            outcome = run_task(payload(state), *(outcomes[u] for u in task.upstream))
        outcomes[key] = outcome
        listener(outcome)
    return outcomes
