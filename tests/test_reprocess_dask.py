"""Reprocessing on Dask for real: a ``LocalCluster`` of worker processes (or a running
scheduler's), a raw catalog filled by a RunEngine with ophyd.sim, an embedded store shared with
the workers through its local server, and a served store on PostgreSQL with two server workers.

One embedded store for the module (its raw catalog is filled once); each test's campaign has
its own ``tag`` parameter, so its lineages are its own. The analyses are in
tests/reprocess_dask_analyses.py; every result's md says which process computed it and when.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
import yaml

from bluesky_analysis_store import AnalysisStore, reprocess

pytestmark = [
    pytest.mark.slow,
    # the scheduler of a LocalCluster runs in this process; on a loaded machine making its
    # scratch directory can take over a second, which distributed reports as a UserWarning
    pytest.mark.filterwarnings(
        "ignore:Creating scratch directories is taking a surprisingly long time:UserWarning"
    ),
]

TESTS = Path(__file__).resolve().parent
ANALYSES = "reprocess_dask_analyses"
FAST, SLOW = "SA-fast", "SA-slow"
SCANS = 6  # scan ids 1 and 2 are sample FAST's, 3 to 6 sample SLOW's
BAS = Path(sys.executable).parent / "bas"


@dataclass
class Raw:
    """What the RunEngine wrote: the runs' uids by scan id, and each run's sample."""

    uids: dict[int, str]
    samples: dict[str, str]

    def of(self, sample: str) -> list[str]:
        return [uid for uid, s in self.samples.items() if s == sample]


def _fill_raw(raw: Any, scans: int = SCANS) -> Raw:
    """``scans`` small scans of ophyd.sim's ``det`` written by a RunEngine into ``raw``."""
    from bluesky import RunEngine
    from bluesky.plans import scan
    from bluesky_tiled_plugins.writing.tiled_writer import TiledWriter
    from ophyd.sim import det, motor

    engine = RunEngine({})
    engine.subscribe(TiledWriter(raw))
    uids: dict[int, str] = {}
    samples: dict[str, str] = {}
    for n in range(1, scans + 1):
        sample = FAST if n <= 2 else SLOW
        (uid,) = engine(scan([det], motor, -1, 1, 5), sample_uuid=sample)
        uids[n] = uid
        samples[uid] = sample
    return Raw(uids, samples)


@dataclass
class Embedded:
    directory: Path
    raw: Raw

    def open(self) -> AnalysisStore:
        """The store through its local server, as ``reprocess`` and its workers open it."""
        return AnalysisStore.open(self.directory, raw="raw", local_server=True)


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Embedded]:
    """One embedded store with a raw catalog of :data:`SCANS` runs; its local server stopped
    at the end."""
    from bluesky_analysis_store.store._local_server import stop

    directory = tmp_path_factory.mktemp("reprocess-dask") / "store"
    try:
        with AnalysisStore.open(directory, raw="raw", local_server=True) as store:
            raw = _fill_raw(store.raw)
        yield Embedded(directory, raw)
    finally:
        stop(directory)


def _config(path: Path, tag: str, retries: int = 0, **scan_parameters: Any) -> Path:
    """A campaign ``tag``: ``TAG_scans`` (per raw run), then ``TAG_samples`` (per sample, over
    the outputs of ``TAG_scans``). The procedures are named after the campaign: a stored run
    of the same analysis over the same inputs, made by a procedure of the same name with other
    parameters, would be stale for this one (another test's)."""
    campaign = {
        "name": tag,
        "retries": retries,
        "procedures": {
            f"{tag}_scans": {
                "analysis": f"{ANALYSES}:scan_total",
                "version": "1.0",
                "parameters": {"tag": tag, **scan_parameters},
                "inputs": {"raw": {"plan_name": "scan"}},
            },
            f"{tag}_samples": {
                "analysis": f"{ANALYSES}:sample_total",
                "version": "1.0",
                "parameters": {"tag": tag},
                "inputs": {"procedure": f"{tag}_scans"},
                "per": "sample",
            },
        },
    }
    config = path / f"{tag}.yaml"
    config.write_text(yaml.safe_dump(campaign, sort_keys=False))
    return config


TASKS = SCANS + 2  # a task per scan, one per sample


def _runs(store: AnalysisStore, campaign: str) -> dict[str, dict[str, Any]]:
    """``{uid: start}`` of the complete runs (saved results) of one campaign."""
    from tiled.queries import Eq

    found = store.runs.search(Eq("start.reprocess.campaign", campaign))
    return {
        uid: dict(run.metadata["start"])
        for uid, run in found.items()
        if (run.metadata.get("stop") or {}).get("exit_status") == "success"
    }


def _check_complete(runs: dict[str, dict[str, Any]], raw: Raw) -> None:
    """One result per task, no lineage twice: a ``scans`` run per raw run (its only parent)
    and a ``samples`` run per sample whose parents are that sample's ``scans`` runs."""
    lineages = [start["lineage_hash"] for start in runs.values()]
    assert len(lineages) == len(set(lineages)) == len(raw.samples) + 2
    by_parent = {}
    for uid, start in runs.items():
        if start["analysis_name"] == "scan_total":
            (parent,) = start["parent_uids"]
            assert parent not in by_parent
            by_parent[parent] = uid
    assert set(by_parent) == set(raw.samples)
    groups = {
        start["sample_uuid"]: set(start["parent_uids"])
        for start in runs.values()
        if start["analysis_name"] == "sample_total"
    }
    assert groups == {s: {by_parent[r] for r in raw.of(s)} for s in (FAST, SLOW)}


def _bas(*args: str) -> list[str]:
    return [str(BAS), *args]


def _environment() -> dict[str, str]:
    """For a ``bas`` subprocess: the test analyses importable (by it and its Dask workers)."""
    path = os.pathsep.join(p for p in (str(TESTS), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path}


def _table(output: str) -> dict[str, dict[str, int]]:
    """``bas reprocess``'s summary table: ``{procedure: {column: count}}``."""
    lines = output.splitlines()
    (at,) = [i for i, line in enumerate(lines) if line.split()[:2] == ["procedure", "tasks"]]
    header = lines[at].replace("to run", "to_run").split()[1:]
    rows = {}
    for line in lines[at + 1 :]:
        cells = line.split()
        if len(cells) != len(header) + 1 or not all(c.isdigit() for c in cells[1:]):
            break
        rows[cells[0]] = dict(zip(header, map(int, cells[1:]), strict=True))
    return rows


# -- an embedded store, reprocess() with a LocalCluster of two worker processes --------------


@pytest.fixture(scope="module")
def chained(embedded: Embedded, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The chained campaign, run once: the runs of sample SLOW take 1.5 s each."""
    config = _config(tmp_path_factory.mktemp("chained"), "chained", seconds=1.5, only_sample=SLOW)
    shown = io.StringIO()  # the progress bars and the dashboard's address
    with contextlib.redirect_stderr(shown):
        report = reprocess(config, embedded.directory, raw="raw", workers=2, progress=True)
    return config, report, shown.getvalue()


@pytest.mark.timeout(600)
def test_two_chained_procedures_run_on_two_worker_processes(embedded, chained):
    """Every task ran and saved its result with provenance; the group's parents are the
    per-run results of its sample; both worker processes (not this one) ran tasks, one at a
    time each; and the group of sample FAST started before the last run of sample SLOW was done
    (dependents start as their inputs complete, not after the whole procedure: FAST's two runs
    come first, and SLOW's four take two rounds of the two workers)."""
    _, report, shown = chained
    assert {key: o.status for key, o in report.outcomes.items()} == dict.fromkeys(
        report.states, "ran"
    )
    # the bars: both workers busy with the per-run procedure at once, then all done
    assert f"Dask dashboard: {report.dashboard}" in shown
    assert "running=2, pending=" in shown
    assert "chained_scans: 100%" in shown
    assert f"ran={SCANS}, running=0, pending=0" in shown
    assert {name: (s.tasks, s.ran) for name, s in report.summary().items()} == {
        "chained_scans": (SCANS, SCANS),
        "chained_samples": (2, 2),
    }
    assert report.dashboard is not None
    with embedded.open() as store:
        runs = _runs(store, "chained")
        _check_complete(runs, embedded.raw)
        assert set(runs) == {report.uid(key) for key in report.states}
        for uid, start in runs.items():
            provenance = start["provenance"]
            assert start["lineage_hash"] == store.start_document(uid)["lineage_hash"]
            assert provenance["code"]["name"] == start["analysis_name"]
            assert provenance["parameters"]["tag"] == "chained"
            assert provenance["environment"]["python"]
            assert start["reprocess"] == {
                "campaign": "chained",
                "procedure": "chained_scans"
                if start["analysis_name"] == "scan_total"
                else "chained_samples",
            }
        # a group's parents: the per-run results, as the report's outcomes name them
        for sample in (FAST, SLOW):
            group = report.uid(f"chained_samples[sample {sample}]")
            assert set(runs[group]["parent_uids"]) == {
                report.uid(f"chained_scans[{raw}]") for raw in embedded.raw.of(sample)
            }
    workers = {start["worker"]["pid"] for start in runs.values()}
    assert len(workers) == 2
    assert os.getpid() not in workers
    for pid in workers:  # one task at a time in each (a task's reads do not secede its thread)
        spans = sorted(
            (s["worker"]["began"], s["worker"]["ended"])
            for s in runs.values()
            if s["worker"]["pid"] == pid
        )
        assert all(ended <= began for (_, ended), (began, _) in pairwise(spans)), spans
    scans = [s for s in runs.values() if s["analysis_name"] == "scan_total"]
    last_slow_done = max(s["worker"]["ended"] for s in scans if s["sample_uuid"] == SLOW)
    fast_group = runs[report.uid(f"chained_samples[sample {FAST}]")]
    assert fast_group["worker"]["began"] < last_slow_done


def test_a_rerun_finds_everything_stored_and_starts_no_cluster(embedded, chained):
    """Run again: every task is stored (its uid reused), no Dask cluster is started and no run
    is saved."""
    config, first, _ = chained
    with embedded.open() as store:
        before = set(store.runs)
    again = reprocess(config, embedded.directory, raw="raw", workers=2)
    assert again.dashboard is None
    assert {key: o.status for key, o in again.outcomes.items()} == dict.fromkeys(
        first.states, "stored"
    )
    assert {key: again.uid(key) for key in again.states} == {
        key: first.uid(key) for key in first.states
    }
    with embedded.open() as store:
        assert set(store.runs) == before


# -- bas reprocess killed (SIGKILL, the whole process group) and run again -------------------


def _group_members(group: int) -> list[int]:
    """Processes (not zombies) of process group ``group``."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        if int(fields[2]) == group and fields[0] != "Z":
            members.append(int(entry.name))
    return members


@pytest.mark.timeout(900)
def test_a_campaign_killed_midway_resumes_without_duplicates(embedded, tmp_path):
    """``bas reprocess`` (and its Dask cluster) killed with SIGKILL once some results are
    saved, then run again: nothing of it is left running, the rerun runs only what is missing
    (its ``stored`` counts are what the first one saved), every task has one complete result
    and no lineage has two."""
    config = _config(tmp_path, "killed", seconds=1.5)
    command = _bas("reprocess", str(config), "--store", str(embedded.directory), "--raw", "raw")
    command += ["--workers", "2"]
    log = tmp_path / "killed.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            command,
            env=_environment(),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        with embedded.open() as store:
            deadline = time.monotonic() + 600
            while not _runs(store, "killed"):
                assert process.poll() is None, log.read_text()
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    deadline = time.monotonic() + 60
    while _group_members(process.pid) and time.monotonic() < deadline:
        time.sleep(0.2)  # init reaps the orphaned workers
    assert _group_members(process.pid) == []
    time.sleep(1.0)  # a request the killed workers had sent may still be answered
    with embedded.open() as store:
        saved = _runs(store, "killed")
    assert 1 <= len(saved) < TASKS, log.read_text()

    rerun = subprocess.run(command, env=_environment(), capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    table = _table(rerun.stdout)
    assert sum(row["stored"] for row in table.values()) == len(saved)
    assert sum(row["ran"] for row in table.values()) == TASKS - len(saved)
    with embedded.open() as store:
        runs = _runs(store, "killed")
    _check_complete(runs, embedded.raw)
    assert set(saved) <= set(runs)  # what the first one saved is reused, not saved again


# -- a failing analysis under Dask, through bas reprocess ------------------------------------


@pytest.mark.timeout(600)
def test_a_failing_analysis_is_recorded_its_dependents_skipped_the_rest_saved(embedded, tmp_path):
    """Scan 1 (sample FAST) fails: it is recorded as an analysis failure, the group of FAST
    is skipped, everything else is saved; ``bas reprocess`` prints the summary table and the
    failed and skipped tasks, and exits 1."""
    config = _config(tmp_path, "failing", fail_scan_ids=[1])
    command = _bas("reprocess", str(config), "--store", str(embedded.directory), "--raw", "raw")
    result = subprocess.run(
        [*command, "--workers", "2"], env=_environment(), capture_output=True, text=True
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert _table(result.stdout) == {
        "failing_scans": dict(
            tasks=6, stored=0, loose=0, stale=0, to_run=6, ran=5, failed=1, skipped=0
        ),
        "failing_samples": dict(
            tasks=2, stored=0, loose=0, stale=0, to_run=2, ran=1, failed=0, skipped=1
        ),
    }
    failed_scan = embedded.raw.uids[1]
    assert re.search(
        rf"^failing_scans\[{failed_scan}\]: failed: AnalysisInputError: scan 1 is one",
        result.stdout,
        re.M,
    )
    assert re.search(
        rf"^failing_samples\[sample {FAST}\]: skipped: failing_scans\[{failed_scan}\] failed",
        result.stdout,
        re.M,
    )
    with embedded.open() as store:
        runs = _runs(store, "failing")
        records = [r for r in store.failed_analyses("scan_total") if "(failing)" in r["reason"]]
    assert [r["parent_uids"] for r in records] == [[failed_scan]]
    scanned = {s["parent_uids"][0] for s in runs.values() if s["analysis_name"] == "scan_total"}
    assert scanned == set(embedded.raw.samples) - {failed_scan}
    groups = [s for s in runs.values() if s["analysis_name"] == "sample_total"]
    assert [g["sample_uuid"] for g in groups] == [SLOW]
    assert len(runs) == 6


# -- --scheduler: a cluster started here ----------------------------------------------------


@pytest.mark.timeout(600)
def test_tasks_run_on_the_scheduler_given(embedded, tmp_path):
    """``bas reprocess --scheduler ADDRESS``: the tasks run on that cluster's workers."""
    import logging

    from distributed import Client, LocalCluster

    config = _config(tmp_path, "scheduled")
    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",
            silence_logs=logging.ERROR,
        ) as cluster,
        Client(cluster) as client,
    ):
        workers = set(client.run(os.getpid).values())
        command = _bas("reprocess", str(config), "--store", str(embedded.directory))
        command += ["--raw", "raw", "--scheduler", cluster.scheduler_address]
        result = subprocess.run(command, env=_environment(), capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")
    with embedded.open() as store:
        runs = _runs(store, "scheduled")
    _check_complete(runs, embedded.raw)
    assert {start["worker"]["pid"] for start in runs.values()} <= workers


# -- a served store on PostgreSQL with two server workers; the Dask workers insert into it ----


@pytest.mark.timeout(900)
def test_dask_workers_insert_into_a_served_store_with_two_server_workers(postgres_server, tmp_path):
    """``bas serve --workers 2`` on PostgreSQL, its raw catalog filled over HTTP by a
    RunEngine: ``reprocess`` into it runs every task on the Dask workers, which insert their
    results themselves (each result's md names a worker process, not this one); every run is
    readable with what its analysis computed, and no lineage is saved twice."""
    import numpy as np
    from helpers import free_port
    from postgres import new_database
    from served import READ_KEY, WRITE_KEY, running_server

    directory = tmp_path / "served"
    directory.mkdir()
    files = directory / "files"
    with (
        new_database(postgres_server, "reprocess_catalog") as catalog_db,
        new_database(postgres_server, "reprocess_tables") as tables_db,
    ):
        options = ["--workers", "2"]
        options += ["--catalog", f"postgresql+asyncpg://{postgres_server}/{catalog_db}"]
        options += ["--tables", f"postgresql://{postgres_server}/{tables_db}"]
        with running_server(
            directory, free_port(), *options, backend="postgresql", postgres=postgres_server
        ) as server:
            with AnalysisStore.open(server.uri, api_key=WRITE_KEY, root=files, raw="raw") as store:
                raw = _fill_raw(store.raw, scans=4)
            config = _config(tmp_path, "served")
            report = reprocess(
                config, server.uri, raw="raw", root=files, api_key=WRITE_KEY, workers=2
            )
            assert {key: o.status for key, o in report.outcomes.items()} == dict.fromkeys(
                report.states, "ran"
            )
            with AnalysisStore.open(server.uri, api_key=READ_KEY, root=files, raw="raw") as reader:
                runs = _runs(reader, "served")
                _check_complete(runs, raw)
                totals = {}
                for uid, start in runs.items():
                    if start["analysis_name"] == "scan_total":
                        (parent,) = start["parent_uids"]
                        det = np.asarray(reader.raw[parent]["primary"].read()["det"])
                        total = reader[uid]["totals"].read()["total"]
                        assert float(np.asarray(total)[0]) == pytest.approx(det.sum())
                        totals[parent] = float(det.sum())
                for start in runs.values():
                    if start["analysis_name"] == "sample_total":
                        merged = reader[start["uid"]]["merged"].read()
                        expected = sum(totals[r] for r in raw.of(start["sample_uuid"]))
                        assert float(np.asarray(merged["total"])[0]) == pytest.approx(expected)
    workers = {start["worker"]["pid"] for start in runs.values()}
    assert len(workers) == 2
    assert os.getpid() not in workers


# -- a rehearsal on the null store, on worker processes ----------------------------------------


@pytest.mark.timeout(600)
def test_a_campaign_is_rehearsed_on_worker_processes_and_nothing_is_stored(embedded, tmp_path):
    """``--store null:STORE`` with a ``LocalCluster``: each worker opens the null store over
    STORE's raw runs (read through STORE's local server), runs and checks every per-run task,
    and keeps nothing: STORE holds no run of the campaign afterwards."""
    config = _config(tmp_path, "rehearsed")
    campaign = yaml.safe_load(config.read_text())
    del campaign["procedures"]["rehearsed_samples"]  # it would read results a null store drops
    config.write_text(yaml.safe_dump(campaign, sort_keys=False))
    with embedded.open() as store:
        before = len(list(store))
    report = reprocess(config, f"null:{embedded.directory}", raw="raw", workers=2)
    assert {o.status for o in report.outcomes.values()} == {"ran"}
    assert len(report.outcomes) == SCANS
    assert report.dashboard is not None  # on Dask, not here
    with embedded.open() as store:
        assert _runs(store, "rehearsed") == {}
        assert len(list(store)) == before
