"""A reprocessing task on a real Dask worker reads its parents in its own thread.

tiled reads a table as a dask dataframe and computes it; inside a Dask worker dask's default
scheduler is the cluster, so each read became tasks sent back to the scheduler, queued behind
the campaign's own tasks (a trivial task took seconds). The analysis below records which
scheduler a ``compute`` inside it uses, and reads the run as analyses do.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest

from bluesky_analysis_store import AnalysisStore, reprocess


def scheduler_in_task(run: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Read ``det`` and say which dask scheduler a compute here would use."""
    import dask.base

    table = run["primary"].read()
    scheduler = dask.base.get_scheduler()
    return [{"summary": {"total": float(table["det"].sum())}}], {
        "dask_scheduler": getattr(scheduler, "__qualname__", type(scheduler).__name__)
    }


scheduler_in_task.version = "1"  # type: ignore[attr-defined]

CAMPAIGN = """
name: scheduler
procedures:
  read:
    analysis: test_reprocess_worker:scheduler_in_task
    version: "1"
    inputs: {raw: {plan_name: count}}
"""


@pytest.mark.slow
def test_a_task_on_a_dask_worker_computes_its_reads_in_its_own_thread(tmp_path: Path) -> None:
    from bluesky import RunEngine
    from bluesky import plans as bp
    from bluesky_tiled_plugins.writing.tiled_writer import TiledWriter

    from bluesky_analysis_store.store._local_server import stop

    previous = tempfile.tempdir  # ophyd.sim makes a temporary directory at import
    tempfile.tempdir = str(tmp_path)
    try:
        from ophyd.sim import det
    finally:
        tempfile.tempdir = previous
    directory = tmp_path / "store"
    try:
        with AnalysisStore.open(directory, raw="raw", local_server=True) as store:
            engine = RunEngine({})
            engine.subscribe(TiledWriter(store.raw))
            (raw_uid,) = engine(bp.count([det], 3))
        config = tmp_path / "campaign.yaml"
        config.write_text(CAMPAIGN)
        report = reprocess(config, directory, raw="raw", workers=1)
        (outcome,) = report.outcomes.values()
        assert outcome.status == "ran", outcome.reason
        with AnalysisStore.open(directory, raw="raw", local_server=True) as store:
            start = store.start_document(str(outcome.uid))
        assert start is not None
        assert start["parent_uids"] == [raw_uid]
        assert start["dask_scheduler"] == "get_sync"  # not the cluster's client
    finally:
        stop(directory)
