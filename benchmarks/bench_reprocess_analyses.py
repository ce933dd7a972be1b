"""Analyses for ``bench_reprocess.py``, referenced as ``bench_reprocess_analyses:NAME``.

A module of its own (not the script), so that the Dask workers, spawned with the parent's
``sys.path`` (the benchmarks directory first), import it by name.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _signal(run: Any) -> np.ndarray:
    return np.asarray(run["primary"].read()["det"], dtype=float)


def burn(run: Any, *, work: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """CPU-bound: read the run's ``det``, then ``work`` iterations of pure Python (holds the
    interpreter lock, as most analysis code between numpy calls does); a small result."""
    signal = _signal(run)
    total = 0.0
    scale = float(signal.mean())
    for i in range(work):
        total += (i % 7) * scale
    return [{"summary": {"mean": scale, "burned": total}}], {}


burn.version = "1"  # type: ignore[attr-defined]


def trivial(run: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Read the run's ``det`` and keep its mean: the cost is the store's, not the analysis's."""
    signal = _signal(run)
    return [{"summary": {"mean": float(signal.mean()), "points": int(signal.size)}}], {}


trivial.version = "1"  # type: ignore[attr-defined]
