"""Idempotent, conflict-safe inserts (issue 6, part 2), on SQLite and PostgreSQL.

Inserting a run twice is a no-op; the same uid with other content is a conflict; saving a
lineage again returns the saved run (or refuses other content under the same lineage). Eight
real processes saving at once make exactly one run of one lineage, and eight runs of eight.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import PARENT_UID, compose, figure, make_provenance
from served import WRITE_KEY

from bluesky_analysis_store import AnalysisStore, RunConflictError

TESTS = Path(__file__).resolve().parent
PROCESSES = 8


def _tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() if p.is_file() else b"<dir>"
        for p in sorted(root.rglob("*"))
    }


@pytest.fixture
def store(any_catalog: Any) -> AnalysisStore:
    return AnalysisStore(any_catalog.new_runs_container(), any_catalog.new_root())


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> str:
    """'sqlite' or 'postgresql': the catalog ``store`` runs on."""
    return str(request.node.callspec.params["any_catalog"])


def _data(scale: float = 1.0) -> list[dict[str, Any]]:
    return [
        {"primary": {"image": np.full((6, 4), scale * i, "f4"), "x": scale * i}} for i in range(4)
    ]


def test_inserting_a_run_twice_is_a_no_op(store: AnalysisStore, backend: str, capsys: Any) -> None:
    run = compose(_data(), {"k": 1}, root=store.root, provenance=make_provenance())
    sends = 3  # the first time inserts, the next two change nothing
    for _ in range(sends):
        for name, doc in run:
            store.insert(name, doc)
    assert list(store) == [run.uid]
    node = store[run.uid]
    assert node.metadata["stop"]["exit_status"] == "success"
    events = len(node["primary"].base["internal"].read())
    assert events == 4  # no event inserted twice
    assert node["primary"]["image"].shape == (4, 6, 4)
    figure(
        capsys,
        "idempotence",
        "the same run inserted three times: one run, no event or frame twice",
        backend=backend,
        sends=sends,
        runs=len(store),
        events_stored=events,
    )


def test_same_uid_with_other_content_is_a_conflict(
    store: AnalysisStore, backend: str, capsys: Any
) -> None:
    run = compose(_data(), {"k": 1}, root=store.root, provenance=make_provenance())
    for name, doc in run:
        store.insert(name, doc)
    before = dict(store[run.uid].metadata)
    conflicts = []

    start = dict(run.documents[0][1], k=2)
    with pytest.raises(RunConflictError, match=rf"run {run.uid} .* different start .*keys: k"):
        store.insert("start", start)
    conflicts.append("start")
    # the same start again (a no-op), then a stop that says something else
    for name, doc in list(run)[:-1]:
        store.insert(name, doc)
    stop = dict(run.documents[-1][1], exit_status="abort")
    with pytest.raises(RunConflictError, match=r"different stop document.*exit_status"):
        store.insert("stop", stop)
    conflicts.append("stop")
    assert dict(store[run.uid].metadata) == before
    assert len(store) == 1
    figure(
        capsys,
        "idempotence",
        "a document with a stored run's uid and other content is a RunConflictError naming the "
        "differing keys; the stored run is unchanged",
        backend=backend,
        conflicts=len(conflicts),
        runs=len(store),
    )


def test_saving_a_lineage_again_returns_the_run_or_refuses_other_content(
    store: AnalysisStore, backend: str, capsys: Any
) -> None:
    provenance = make_provenance(parameters={"bins": 4})
    uid = store.save(_data(), {"k": 1}, provenance=provenance)
    files = _tree(store.root)
    # the same analysis, version, parameters, parents and content: the saved run, no new file
    assert store.save(_data(), {"k": 1}, provenance=make_provenance(parameters={"bins": 4})) == uid
    assert _tree(store.root) == files
    assert list(store) == [uid]
    # the same lineage with other data (the analysis changed but kept its version): refused
    refused = 0
    with pytest.raises(RunConflictError, match=rf"lineage .* already saved as run\(s\) {uid}"):
        store.save(_data(scale=2.0), {"k": 1}, provenance=provenance)
    refused += 1
    with pytest.raises(RunConflictError, match="new_version=True"):
        store.save(_data(), {"k": 2}, provenance=provenance)  # other metadata
    refused += 1
    assert _tree(store.root) == files
    # asked for: another run of the lineage
    again = store.save(_data(scale=2.0), {"k": 1}, provenance=provenance, new_version=True)
    assert again != uid
    assert store.with_lineage(provenance.lineage_hash()) == [uid, again]
    assert store.derived_from(PARENT_UID) == [uid, again]
    figure(
        capsys,
        "idempotence",
        "saving a lineage again: the same content returns the saved run and writes nothing; "
        "other data or metadata is refused and writes nothing; new_version=True saves another",
        backend=backend,
        runs=len(store),
        refused=refused,
    )


#: One process imports everything, then forks PROCESSES children. Each opens its own store,
#: reports ready, and for each round waits for "go" and saves: round "same" with one lineage
#: for all, round "different" with a lineage each. argv: tests dir, target, root, tag.
SAVERS = """
import json, os, sys, threading
sys.path.insert(0, sys.argv[1])
import numpy as np
import bluesky_analysis_store.insert._sink, tiled.client, tiled.server.app
from helpers import make_provenance
from bluesky_analysis_store import AnalysisStore

target, root, tag, count = sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
ready_r, ready_w = os.pipe()
go_r, go_w = os.pipe()
done_r, done_w = os.pipe()
assert threading.active_count() == 1, threading.enumerate()  # safe to fork
children = []
for i in range(count):
    pid = os.fork()
    if pid == 0:
        status = 0
        try:
            os.close(go_w)
            store = AnalysisStore.open(
                target, api_key=os.environ.get("BAS_API_KEY"), root=root or None, spool=False
            )
            os.write(ready_w, b"r")
            for round in ("same", "different"):
                os.read(go_r, 1)
                parameters = {"tag": tag, "which": "one" if round == "same" else i}
                try:
                    uid = store.save(
                        [{"primary": {"image": np.ones((8, 8), "f4"), "x": 1.0}}],
                        {"round": round},
                        writers={"image": "BAS_HDF5"},
                        provenance=make_provenance(parameters=parameters),
                    )
                    line = {"round": round, "child": i, "uid": uid}
                except Exception as error:
                    line = {"round": round, "child": i, "error": f"{type(error).__name__}: {error}"}
                os.write(done_w, (json.dumps(line) + "\\n").encode())
            store.close()
        except BaseException as error:
            os.write(done_w, (json.dumps({"child": i, "fatal": repr(error)}) + "\\n").encode())
            status = 1
        os._exit(status)
    children.append(pid)
os.close(go_r)
for _ in range(count):
    os.read(ready_r, 1)
results = []
with os.fdopen(done_r) as done:
    for round in ("same", "different"):
        os.write(go_w, b"g" * count)  # all children start saving at once
        for _ in range(count):
            results.append(json.loads(done.readline()))
statuses = [os.waitpid(pid, 0)[1] for pid in children]
print(json.dumps({"results": results, "statuses": statuses}))
"""


def _save_concurrently(target: str, root: str, tag: str, env: dict[str, str]) -> list[dict]:
    process = subprocess.run(
        [sys.executable, "-c", SAVERS, str(TESTS), target, root, tag, str(PROCESSES)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **env},
    )
    assert process.returncode == 0, process.stdout + process.stderr
    outcome = json.loads(process.stdout.strip().splitlines()[-1])
    assert outcome["statuses"] == [0] * PROCESSES, outcome
    return list(outcome["results"])


def _check_rounds(store: AnalysisStore, results: list[dict], tag: str) -> dict[str, int]:
    assert all("uid" in r for r in results), [r for r in results if "uid" not in r]
    same = {r["uid"] for r in results if r["round"] == "same"}
    different = {r["uid"] for r in results if r["round"] == "different"}
    assert len(same) == 1, same  # every process got the one run
    assert len(different) == PROCESSES
    lineage = store[next(iter(same))].metadata["start"]["lineage_hash"]
    assert store.with_lineage(lineage, include_incomplete=True) == list(same)
    for uid in same | different:
        assert store[uid].metadata["stop"]["exit_status"] == "success"
        assert (store.root / uid / "primary" / "image.h5").is_file()
    # the losers of round one wrote no file: one run directory per run
    mine = {p.name for p in store.root.iterdir() if p.is_dir()} & {r["uid"] for r in results}
    assert mine == same | different
    return {"same_lineage_runs": len(same), "different_lineage_runs": len(different)}


@pytest.mark.slow
def test_eight_processes_on_a_served_store(bas_server: Any, capsys: Any) -> None:
    """Through ``bas serve`` on SQLite and on PostgreSQL."""
    tag = f"served-{bas_server.backend}"
    root = bas_server.directory / "files"
    results = _save_concurrently(bas_server.uri, str(root), tag, {"BAS_API_KEY": WRITE_KEY})
    with bas_server.store(WRITE_KEY) as store:
        figures = _check_rounds(store, results, tag)
    figure(
        capsys,
        "concurrency",
        "8 processes save one lineage at once (one run, every process gets its uid), then 8 "
        "lineages at once (8 runs), through bas serve",
        backend=bas_server.backend,
        processes=PROCESSES,
        **figures,
    )


def test_eight_threads_on_one_embedded_store(tmp_path: Path, capsys: Any) -> None:
    """A LiveAnalysis worker and a session share one store object: threads, not processes."""
    barrier = threading.Barrier(PROCESSES)
    results: list[dict[str, Any]] = []

    def save(store: AnalysisStore, child: int) -> None:
        for round in ("same", "different"):
            barrier.wait(timeout=120)
            parameters = {"tag": "threads", "which": "one" if round == "same" else child}
            uid = store.save(
                [{"primary": {"image": np.ones((8, 8), "f4"), "x": 1.0}}],
                {"round": round},
                writers={"image": "BAS_HDF5"},
                provenance=make_provenance(parameters=parameters),
            )
            results.append({"round": round, "child": child, "uid": uid})

    with AnalysisStore.open(tmp_path / "embedded") as store:
        threads = [threading.Thread(target=save, args=(store, i)) for i in range(PROCESSES)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=300)
        assert len(results) == 2 * PROCESSES, results
        figures = _check_rounds(store, results, "threads")
    figure(
        capsys,
        "concurrency",
        "8 threads sharing one embedded store save one lineage at once (one run), then 8 "
        "lineages at once (8 runs)",
        backend="embedded-sqlite",
        threads=PROCESSES,
        **figures,
    )


def test_a_second_process_is_refused_an_open_embedded_store(tmp_path: Path) -> None:
    """DuckDB admits one process: a store opened in process (``$BAS_LOCAL_SERVER=0``, as in
    these tests) is refused to a second process with a clear error at once, not in mid-save."""
    directory = tmp_path / "embedded"
    command = [sys.executable, "-m", "bluesky_analysis_store.cli", "search", "--store"]
    with AnalysisStore.open(directory) as store:
        uid = store.save(_data(), {}, provenance=make_provenance(parameters={"open": "twice"}))
        refused = subprocess.run(
            [*command, str(directory)], capture_output=True, text=True, timeout=300
        )
        assert refused.returncode == 1
        message = refused.stderr.strip().splitlines()[-1]
        assert message.startswith(
            f"bas search: error: the embedded store {directory.resolve()} is open in another "
            f"process (pid {os.getpid()}: "
        ), message
        assert "open it through its local server everywhere (the default)" in message
        assert f"`bas stop-server --store {directory.resolve()}`" in message
    allowed = subprocess.run(
        [*command, str(directory)], capture_output=True, text=True, timeout=300
    )
    assert allowed.returncode == 0, allowed.stderr
    assert uid in allowed.stdout
