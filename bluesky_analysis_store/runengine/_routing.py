"""Send analysis runs and raw runs from one RunEngine to different catalogs.

A beamline RunEngine emits both kinds: raw scans, and analysis runs from plans such as
:func:`~bluesky_analysis_store.analyze`. An analysis run is one whose start document carries
``provenance`` (every run this package makes does; the served store refuses runs without it).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from ..provenance._run_kind import is_analysis_run

if TYPE_CHECKING:
    from ..core._documents import RunStart, Subscriber


def select_runs(callback: Subscriber, accept: Callable[[Mapping[str, Any]], bool]) -> Any:
    """A RunEngine subscriber passing ``callback`` every document of the runs ``accept`` takes.

    Built on ``event_model.RunRouter``, which follows each document to its run (descriptors,
    resources, datums, events and stream documents alike), so interleaved runs are routed
    correctly. The returned object holds ``callback`` strongly: subscribing it to a RunEngine
    keeps ``callback`` alive even if it is a bound method of an object nobody else holds.
    """
    from event_model import RunRouter

    def factory(name: str, start: RunStart) -> tuple[list[Subscriber], list[Any]]:
        if accept(start):
            return [callback], []
        return [], []

    return RunRouter([factory])


def analysis_runs_only(callback: Subscriber) -> Any:
    """Pass ``callback`` only the runs that record provenance, e.g. ``store.insert``.

    ``RE.subscribe(analysis_runs_only(store.insert))`` puts the analysis runs a session's plans
    produce into the analysis store and leaves raw scans to the raw catalog.
    """
    return select_runs(callback, is_analysis_run)


def raw_runs_only(callback: Subscriber) -> Any:
    """Pass ``callback`` only the runs without provenance (raw scans), e.g. a raw TiledWriter."""
    return select_runs(callback, lambda start: not is_analysis_run(start))
