"""Analyses for tests/test_reprocess_dask.py, referenced as ``reprocess_dask_analyses:NAME``.

Importable by Dask's worker processes (spawned: they get the parent's ``sys.path``, where
pytest put ``tests/``) and by a ``bas`` subprocess given ``PYTHONPATH=tests``. Each result's md
says where and when it was computed (``worker``: the process id, and the wall-clock times the
analysis began and ended), so a test can tell which process ran a task and in what order.
``tag`` keeps the lineages of one test's campaign apart from another's.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from bluesky_analysis_store import AnalysisInputError


def _worker(began: float) -> dict[str, Any]:
    return {"worker": {"pid": os.getpid(), "began": began, "ended": time.time()}}


def scan_total(
    run: Any,
    *,
    tag: str,
    seconds: float = 0.0,
    only_sample: str | None = None,
    fail_scan_ids: Sequence[int] = (),
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Per run: the sum of the detector. Sleeps ``seconds`` first (for the runs of
    ``only_sample``, or all); raises on the scans ``fail_scan_ids``."""
    began = time.time()
    start = run.metadata["start"]
    if start.get("scan_id") in fail_scan_ids:
        raise AnalysisInputError(f"scan {start['scan_id']} is one this test makes fail ({tag})")
    if only_sample is None or start.get("sample_uuid") == only_sample:
        time.sleep(seconds)
    det = np.asarray(run["primary"].read()["det"], dtype=float)
    return [{"totals": {"total": float(det.sum()), "points": len(det)}}], _worker(began)


scan_total.version = "1.0"  # type: ignore[attr-defined]


def sample_total(runs: list[Any], *, tag: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Per group of :func:`scan_total` results: their sum, and how many runs."""
    began = time.time()
    totals = [float(np.asarray(run["totals"].read()["total"])[0]) for run in runs]
    return [{"merged": {"total": sum(totals), "runs": len(runs)}}], _worker(began)


sample_total.version = "1.0"  # type: ignore[attr-defined]
