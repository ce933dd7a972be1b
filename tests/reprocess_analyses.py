"""Analyses the reprocessing tests and benchmarks name as ``reprocess_analyses:NAME``.

pytest puts ``tests/`` on ``sys.path``, and a Dask ``LocalCluster``'s spawned workers inherit
it; a subprocess (``bas``) needs ``PYTHONPATH=tests``. Keep the names stable: other tests and
``benchmarks/`` use them.

* :func:`scaled_sum` (``scaled_sum`` version "1") and :func:`scaled_sum_v2` (the same analysis,
  version "2"): the sum of a detector over a raw run, times ``scale``; parameters checked by a
  pydantic model.
* :func:`merge_runs`: a group analysis over several ``scaled_sum`` results (parameters checked
  against its signature: it has no model).
* :func:`fails_on_odd_scan`: raises on a raw run whose ``scan_id`` is odd.
* :func:`fails_once`: fails its first attempt on each run, succeeds the next (a file per run in
  ``directory`` remembers the attempt), to test retries.
* :func:`burn`: CPU-bound, ``seconds`` of busy work per run (benchmarks).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

DataDicts = list[dict[str, dict[str, Any]]]


class AnalysisFailed(Exception):  # noqa: N818 (what a test analysis raises on purpose)
    """Raised on purpose by the analyses that fail."""


class ScaledSumParameters(BaseModel):
    """The parameters of :func:`scaled_sum`."""

    model_config = ConfigDict(extra="forbid")
    scale: float = Field(1.0, gt=0)
    detector: str = "det"


def _total(run: Any, detector: str) -> float:
    return float(np.sum(np.asarray(run["primary"].read()[detector], dtype=float)))


def scaled_sum(
    run: Any, *, scale: float = 1.0, detector: str = "det"
) -> tuple[DataDicts, dict[str, Any]]:
    """``scale`` times the sum of ``detector`` over the run's primary stream."""
    return [{"result": {"total": scale * _total(run, detector)}}], {"detector": detector}


scaled_sum.name = "scaled_sum"  # type: ignore[attr-defined]
scaled_sum.version = "1"  # type: ignore[attr-defined]
scaled_sum.parameters_model = ScaledSumParameters  # type: ignore[attr-defined]


def scaled_sum_v2(
    run: Any, *, scale: float = 1.0, detector: str = "det"
) -> tuple[DataDicts, dict[str, Any]]:
    """Version 2 of :func:`scaled_sum` (the same name): the same sum, and the point count."""
    table = run["primary"].read()
    total = scale * float(np.sum(np.asarray(table[detector], dtype=float)))
    points = len(np.asarray(table[detector]))
    return [{"result": {"total": total, "points": points}}], {"detector": detector}


scaled_sum_v2.name = "scaled_sum"  # type: ignore[attr-defined]
scaled_sum_v2.version = "2"  # type: ignore[attr-defined]
scaled_sum_v2.parameters_model = ScaledSumParameters  # type: ignore[attr-defined]


def merge_runs(runs: Any, *, label: str = "merged") -> tuple[DataDicts, dict[str, Any]]:
    """A group analysis: the totals of several :func:`scaled_sum` runs and their sum."""
    runs = list(runs) if isinstance(runs, list | tuple) else [runs]
    totals = [float(np.asarray(run["result"].read()["total"])[0]) for run in runs]
    return [{"merged": {"total": float(sum(totals)), "runs": len(totals)}}], {"label": label}


merge_runs.name = "merge_runs"  # type: ignore[attr-defined]
merge_runs.version = "1"  # type: ignore[attr-defined]


def fails_on_odd_scan(run: Any, *, scale: float = 1.0) -> tuple[DataDicts, dict[str, Any]]:
    """:func:`scaled_sum`, but it raises on a run whose ``scan_id`` is odd."""
    scan_id = run.metadata["start"].get("scan_id")
    if not isinstance(scan_id, int) or scan_id % 2:
        raise AnalysisFailed(f"scan {scan_id} is odd")
    return [{"result": {"total": scale * _total(run, "det")}}], {}


fails_on_odd_scan.name = "fails_on_odd_scan"  # type: ignore[attr-defined]
fails_on_odd_scan.version = "1"  # type: ignore[attr-defined]


def fails_once(run: Any, *, directory: str) -> tuple[DataDicts, dict[str, Any]]:
    """Fails the first attempt on each run (it leaves a file named by the run's uid in
    ``directory``) and succeeds the next; the result counts the attempts."""
    counter = Path(directory) / run.metadata["start"]["uid"]
    attempts = int(counter.read_text()) + 1 if counter.exists() else 1
    counter.write_text(str(attempts))
    if attempts == 1:
        raise AnalysisFailed("the first attempt fails")
    return [{"result": {"attempts": attempts}}], {}


fails_once.name = "fails_once"  # type: ignore[attr-defined]
fails_once.version = "1"  # type: ignore[attr-defined]


def burn(run: Any, *, seconds: float = 0.5) -> tuple[DataDicts, dict[str, Any]]:
    """CPU-bound: busy arithmetic for ``seconds`` (pure Python, so it holds the interpreter
    lock, as a real reduction in Python would), then a small result."""
    deadline = time.perf_counter() + seconds
    value, iterations = 0, 0
    while time.perf_counter() < deadline:
        for i in range(1000):
            value = (value * 31 + i) % 1_000_003
        iterations += 1000
    uid = run.metadata["start"]["uid"]
    return [{"burned": {"iterations": iterations, "value": value}}], {"source": uid}


burn.name = "burn"  # type: ignore[attr-defined]
burn.version = "1"  # type: ignore[attr-defined]
