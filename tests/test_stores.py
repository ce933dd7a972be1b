"""What every store must do, run over the embedded tiled store, the null store (``null:``) and
the JSONL directory store (``jsonl:DIR``); then what only the new stores do: nothing left by a
null store, a JSONL store without tiled, ``bas replay DIR --into``; and ``LiveAnalysis`` and
the ``analyze`` plan on both, unchanged.

Where a behaviour cannot apply to the null store (reading back, finding what was saved), the
test says what it does instead, with a typed error or an empty answer: never a skip.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import textwrap
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import PARENT_UID, compose, make_provenance

from bluesky_analysis_store import (
    AnalysisStore,
    LiveAnalysis,
    MetadataPacket,
    ProvenanceError,
    RunConflictError,
    analyze,
    normalize_and_bin,
)
from bluesky_analysis_store.compose._store_protocol import Store
from bluesky_analysis_store.core._errors import (
    AnalysisInputError,
    NothingKeptError,
    RunNotReadableError,
    UnsafePathError,
)
from bluesky_analysis_store.insert._gate import InvalidDocumentError
from bluesky_analysis_store.store._jsonl_store import JsonlStore
from bluesky_analysis_store.store._null_store import NullStore

KINDS = ["embedded", "null", "jsonl"]


@pytest.fixture(scope="module", params=KINDS)
def store(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One store of each kind for the module (each test uses lineages of its own)."""
    directory = tmp_path_factory.mktemp(request.param) / "store"
    target = {"embedded": str(directory), "null": "null:", "jsonl": f"jsonl:{directory}"}
    with AnalysisStore.open(target[request.param]) as opened:
        yield opened


def keeps(store: Any) -> bool:
    return not isinstance(store, NullStore)


def files_under(root: Path) -> list[Path]:
    """The derived files under a store's root (not its lock files)."""
    return sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".bas"))


def data(value: float = 1.0) -> list[dict[str, Any]]:
    return [
        {"primary": {"image": np.full((6, 4), value + i, "f4"), "x": value + i}} for i in range(3)
    ]


def save(
    store: Any, test: str, *, value: float = 1.0, parents: Any = (PARENT_UID,), **kw: Any
) -> str:
    provenance = make_provenance(parents=list(parents), parameters={"test": test})
    return str(
        store.save(data(value), {}, writers={"image": "BAS_HDF5"}, provenance=provenance, **kw)
    )


def lineage_of(test: str, parents: Any = (PARENT_UID,)) -> str:
    return make_provenance(parents=list(parents), parameters={"test": test}).lineage_hash()


# --- what every store does ------------------------------------------------------------------


def test_every_store_is_a_store_of_the_protocol(store):
    assert isinstance(store, Store)  # the members LiveAnalysis, analyze and reprocessing use


def test_a_save_returns_the_uid_of_its_run(store):
    uid = save(store, "uid")
    assert uuid.UUID(uid).version == 4
    if keeps(store):
        assert uid in store
        assert uid in list(store)
        assert store.start_document(uid)["uid"] == uid
        assert store.start_document(uid[:8])["uid"] == uid  # a partial uid
        assert (store.root / uid / "primary" / "image.h5").is_file()
    else:  # checked as a save checks, then nothing kept: not found, not counted, no file
        assert uid not in store
        assert list(store) == []
        assert len(store) == 0
        assert store.start_document(uid) is None
        assert files_under(store.root) == []


def test_reading_a_run_back(store):
    uid = save(store, "read back")
    if isinstance(store, NullStore):
        with pytest.raises(NothingKeptError, match=r"a null store .* keeps nothing"):
            store[uid]
        with pytest.raises(NothingKeptError):
            store.find_run(uid)
    elif isinstance(store, JsonlStore):  # documents, not a run to read data from
        names = [name for name, _ in store.documents(uid)]
        assert names[0] == "start"
        assert names[-1] == "stop"
        assert "stream_resource" in names
        with pytest.raises(RunNotReadableError, match="documents only"):
            store.find_run(uid)
        assert store.find_run(str(uuid.uuid4())) is None
    else:
        image = store[uid]["primary"]["image"].read()
        np.testing.assert_array_equal(image, np.stack([d["primary"]["image"] for d in data()]))


def test_saving_a_lineage_again_returns_its_run_and_other_content_is_a_conflict(store):
    first = save(store, "dedup")
    again = save(store, "dedup")
    before = files_under(store.root)
    if keeps(store):
        assert again == first
        assert store.with_lineage(lineage_of("dedup")) == [first]
        with pytest.raises(RunConflictError, match="content_hash differs"):
            save(store, "dedup", value=5.0)
        assert files_under(store.root) == before  # the refused save wrote nothing
        other = save(store, "dedup", value=5.0, new_version=True)
        assert store.with_lineage(lineage_of("dedup")) == [first, other]
    else:  # nothing kept to find or to conflict with: each save is new
        assert again != first
        assert store.with_lineage(lineage_of("dedup")) == []
        assert save(store, "dedup", value=5.0) not in (first, again)


@pytest.mark.parametrize(
    ("bad", "error"),
    [
        ({"provenance": None}, ProvenanceError),  # no provenance
        ({"data": [{"primary": {"time": 1.0}}]}, AnalysisInputError),  # a reserved key
        ({"data": [{"primary": {"x": object()}}]}, AnalysisInputError),  # no writer takes it
        ({"md": {"uid": "mine"}}, AnalysisInputError),  # a key the start document owns
    ],
    ids=["no-provenance", "reserved-key", "unwritable-value", "bad-metadata"],
)
def test_bad_input_is_refused_with_nothing_written(store, bad, error):
    before = (files_under(store.root), len(store))
    provenance = bad.get("provenance", make_provenance(parameters={"test": "bad"}))
    with pytest.raises(error):
        store.save(bad.get("data", data()), bad.get("md", {}), provenance=provenance)
    assert (files_under(store.root), len(store)) == before


def test_documents_go_through_the_same_gate(store):
    # an analysis run of scalars (no file), whose event page carries a NaN
    provenance = make_provenance(parameters={"g": 1})
    run = compose([{"primary": {"x": 1.0}}], {}, provenance=provenance, event_pages=True)
    documents = list(run)
    for name, doc in documents:
        if name == "event_page":
            doc["data"]["x"] = [float("nan")]
    (name, start), rest = documents[0], documents[1:]
    store.insert(name, start)
    for name, doc in rest[:-2]:  # descriptor ...
        store.insert(name, doc)
    assert rest[-2][0] == "event_page"
    with pytest.raises(InvalidDocumentError, match="NaN"):
        store.insert(*rest[-2])
    with pytest.raises(InvalidDocumentError):  # the run lost a document: it cannot succeed
        store.insert(*rest[-1])
    assert store.with_lineage(start["lineage_hash"]) == []  # never a complete run
    # a raw run (no provenance) is refused at its start
    raw = compose([{"primary": {"x": 1.0}}], {}).documents[0][1]
    del raw["provenance"]
    with pytest.raises(ProvenanceError, match="cannot go into the analysis store"):
        store.insert("start", raw)


def test_a_run_inserted_twice_is_kept_once(store):
    run = compose([{"primary": {"x": 2.0}}], {}, provenance=make_provenance(parameters={"t": 2}))
    for _ in range(2):
        for name, doc in run:
            store.insert(name, doc)
    lineage = run.documents[0][1]["lineage_hash"]
    if keeps(store):
        assert store.with_lineage(lineage) == [run.uid]
        changed = [(name, {**doc, "operator": "someone else"}) for name, doc in run][:1]
        with pytest.raises(RunConflictError, match="different start document"):
            store.insert(*changed[0])  # the same uid with another start: a conflict
    else:  # nothing kept: each time is checked as new
        assert store.with_lineage(lineage) == []


def test_lookups_by_lineage_parents_and_sample(store):
    packet = MetadataPacket()
    sample = packet.set_sample("Cu foil")["sample_uuid"]
    first = save(store, "chain", packet=packet)
    second = save(store, "chain-2", parents=[first])
    if keeps(store):
        assert store.with_lineage(lineage_of("chain")) == [first]
        assert first in store.derived_from(PARENT_UID)
        assert second not in store.derived_from(PARENT_UID)
        assert store.derived_from(first) == [second]
        assert {first, second} <= set(store.derived_from(PARENT_UID, recursive=True))
        assert store.of_sample(sample) == [first]
        assert store.start_document(second)["parent_uids"] == [first]
    else:  # nothing kept: every lookup answers empty
        assert store.with_lineage(lineage_of("chain")) == []
        assert store.derived_from(PARENT_UID, recursive=True) == []
        assert store.derived_from(first) == []
        assert store.of_sample(sample) == []
        assert store.start_document(second) is None


def test_failures_are_recorded_and_hidden_from_results(store):
    provenance = make_provenance(parameters={"test": "failure"})
    record = store.record_failure(provenance, "calibration file missing")
    assert uuid.UUID(record).version == 4
    mine = [f for f in store.failed_analyses("reduce_spectrum") if f["uid"] == record]
    assert store.with_lineage(provenance.lineage_hash()) == []  # a failure is no result
    if keeps(store):
        assert mine == [
            {
                "uid": record,
                "analysis_name": "reduce_spectrum",
                "analysis_version": "1.0",
                "parent_uids": [PARENT_UID],
                "reason": "calibration file missing",
            }
        ]
        assert store.with_lineage(provenance.lineage_hash(), include_incomplete=True) == [record]
    else:
        assert mine == []
    with pytest.raises(ProvenanceError):  # checked as a save's provenance is
        store.record_failure({"code": {"name": "x"}}, "no version")


# --- the null store -------------------------------------------------------------------------


def test_a_null_store_leaves_no_file_anywhere(tmp_path):
    previous = set(Path(tempfile.gettempdir()).iterdir())
    with AnalysisStore.open("null:") as store:
        root = store.root
        assert root.is_dir()
        uid = save(store, "nothing left")
        assert files_under(root) == []  # removed after the save
    assert not root.exists()
    assert set(Path(tempfile.gettempdir()).iterdir()) == previous
    assert uid


# --- the JSONL store ------------------------------------------------------------------------


def test_the_tiled_writer_limits_kept_here_are_bluesky_tiled_plugins_own():
    from bluesky_tiled_plugins.writing.tiled_writer import MAX_ARRAY_SIZE, RESERVED_DATA_KEYS

    from bluesky_analysis_store.compose._keys import TILED_WRITER_LIMITS

    assert (frozenset(RESERVED_DATA_KEYS), MAX_ARRAY_SIZE) == TILED_WRITER_LIMITS


def test_a_jsonl_store_works_without_tiled(tmp_path):
    """In a fresh interpreter where tiled and bluesky-tiled-plugins cannot be imported."""
    code = textwrap.dedent(
        f"""
        import sys
        sys.modules["tiled"] = None  # import tiled -> ImportError
        sys.modules["bluesky_tiled_plugins"] = None
        import numpy as np
        from bluesky_analysis_store import AnalysisStore, capture_provenance

        def reduce(x):
            return x
        reduce.version = "1.0"
        provenance = capture_provenance(reduce, parents=["{PARENT_UID}"])
        with AnalysisStore.open({str(tmp_path / "laptop")!r}.join(["jsonl:", ""])) as store:
            uid = store.save([{{"p": {{"image": np.ones((8, 8)), "x": 1.0}}}}], {{}},
                             writers={{"image": "BAS_HDF5"}}, provenance=provenance)
            failure = store.record_failure(provenance, "late")
            assert store.with_lineage(provenance.lineage_hash()) == [uid]
            assert store.derived_from("{PARENT_UID}") == [uid]
            assert len(store) == 2 and uid in store
        print(uid)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=120
    )
    assert done.returncode == 0, done.stderr
    uid = done.stdout.strip()
    laptop = tmp_path / "laptop"
    assert (laptop / "files" / uid / "p" / "image.h5").is_file()
    (entry, _) = [json.loads(line) for line in (laptop / "index.jsonl").read_text().splitlines()]
    assert entry["start"]["uid"] == uid
    assert entry["stop"]["exit_status"] == "success"
    assert JsonlStore(laptop, read_only=True).documents(uid)[0][1]["uid"] == uid


def test_a_jsonl_store_keeps_its_files_inside_its_directory(tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    with AnalysisStore.open(f"jsonl:{tmp_path / 'store'}") as store:
        run = compose([{"p": {"image": np.ones((8, 8))}}], {}, root=outside)
        documents = list(run)
        for name, doc in documents[:2]:  # start, descriptor
            store.insert(name, doc)
        assert documents[2][0] == "stream_resource"
        with pytest.raises(InvalidDocumentError, match="not inside the store's root"):
            store.insert(*documents[2])
        assert run.uid not in store
    planted = tmp_path / "planted"
    planted.mkdir()
    (planted / "files").symlink_to(outside)  # its root, a link out of it
    (planted / "bas-jsonl-store.json").write_text("{}")
    with pytest.raises(UnsafePathError, match="leads outside the JSONL store"):
        AnalysisStore.open(planted)  # a directory holding a JSONL store opens as one


def test_replay_into_a_real_store_with_every_guarantee_of_a_save(tmp_path, capsys):
    from bluesky_analysis_store.cli import main

    laptop, target = tmp_path / "laptop", tmp_path / "target"
    with AnalysisStore.open(f"jsonl:{laptop}") as offline:
        first = save(offline, "offline")
        second = save(offline, "offline-2", parents=[first])
        failure = offline.record_failure(make_provenance(parameters={"test": "x"}), "broke")
        conflicting = save(offline, "both places")
        escaping = save(offline, "escaping")
    # the target computed "both places" itself, with other content: the JSONL run conflicts
    with AnalysisStore.open(target) as real:
        direct = save(real, "both places", value=7.0)
    # and one JSONL run's file was replaced by a link out of the JSONL store
    secret = tmp_path / "secret.h5"
    secret.write_bytes(b"not yours")
    linked = laptop / "files" / escaping / "primary" / "image.h5"
    linked.unlink()
    linked.symlink_to(secret)

    capsys.readouterr()
    assert main(["replay", str(laptop), "--into", str(target)]) == 1
    out = capsys.readouterr().out
    assert f"inserted run {first} (" in out
    assert f"inserted run {second} (" in out
    assert f"inserted run {failure} (2 documents)" in out
    refused = [line for line in out.splitlines() if line.startswith("failed: ")]
    assert len(refused) == 2, out
    assert any("RunConflictError" in line and "content_hash differs" in line for line in refused)
    assert any("UnsafePathError" in line and "not a file inside" in line for line in refused)
    assert "replayed 3 run(s)" in out

    with AnalysisStore.open(target) as real:
        assert len(real) == 4  # the three replayed and the target's own
        assert real.derived_from(first) == [second]
        assert real.with_lineage(lineage_of("both places")) == [direct]
        assert [f["uid"] for f in real.failed_analyses()] == [failure]
        assert escaping not in real
        assert conflicting not in real
        copied = real.root / first / "primary" / "image.h5"
        assert copied.is_file()
        assert not copied.is_symlink()
        stream_resource = real[first].metadata  # the run reads its copy under the target root
        image = real[first]["primary"]["image"].read()
        np.testing.assert_array_equal(image, np.stack([d["primary"]["image"] for d in data()]))
        assert stream_resource["start"]["uid"] == first
        assert not (real.root / escaping).exists()  # a refused run's copies are taken back

    # replaying again makes no duplicates
    assert main(["replay", f"jsonl:{laptop}", "--into", str(target)]) == 1
    again = capsys.readouterr().out
    assert "replayed 0 run(s)" in again
    assert "3 already stored" in again
    with AnalysisStore.open(target) as real:
        assert len(real) == 4


# --- LiveAnalysis and the analyze plan, unchanged, on the new stores ---------------------------


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Any:
    previous = tempfile.tempdir  # ophyd.sim makes a temporary directory at import
    tempfile.tempdir = str(tmp_path_factory.mktemp("ophyd-sim"))
    try:
        import ophyd.sim
    finally:
        tempfile.tempdir = previous
    return ophyd.sim


@pytest.fixture(params=["null", "jsonl"])
def new_store(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    target = "null:" if request.param == "null" else f"jsonl:{tmp_path / 'store'}"
    with AnalysisStore.open(target) as opened:
        yield opened


def test_live_analysis_with_a_real_run_engine(new_store, sim):
    from bluesky import RunEngine
    from bluesky.plans import scan

    engine = RunEngine({})
    live = LiveAnalysis(normalize_and_bin, new_store, parameters={"bins": 4})
    engine.subscribe(live)
    (raw_uid,) = engine(scan([sim.det, sim.noisy_det], sim.motor, -1, 1, 11))
    live.wait(timeout=120)
    live.close()
    assert live.failures == []
    derived = live.saved[raw_uid]
    if keeps(new_store):
        assert new_store.derived_from(raw_uid) == [derived]
        assert new_store.start_document(derived)["analysis_name"] == "normalize_and_bin"
    else:
        assert new_store.derived_from(raw_uid) == []
        assert derived not in new_store
        assert files_under(new_store.root) == []


class _Collected:
    """A raw run as a RunEngine's documents make it (``LiveAnalysis``'s own collector)."""

    def __call__(self, name: str, doc: Any) -> None:
        from bluesky_analysis_store.runengine._live import CollectedRun

        if name == "start":
            self.run = CollectedRun(doc)
        elif name == "descriptor":
            self.run.add_descriptor(doc)
        elif name == "event":
            self.run.add_event(doc)
        elif name == "stop":
            self.run.stop = doc


def peak(run: Any, *, width: int = 2) -> Any:
    """A spectrum with its peak (the analyze plan's analysis)."""
    values = np.asarray(run["primary"].read()["det"], dtype=float)
    spectrum = np.convolve(values, np.ones(width) / width, mode="same")
    return [{"fit": {"spectrum": spectrum, "center": float(np.argmax(spectrum))}}], {}


peak.version = "1.0"  # type: ignore[attr-defined]


def test_the_analyze_plan(new_store, sim):
    from bluesky import RunEngine
    from bluesky.plans import scan

    from bluesky_analysis_store import analysis_runs_only

    engine = RunEngine({})
    collected = _Collected()
    token = engine.subscribe(collected)
    engine(scan([sim.det], sim.motor, -1, 1, 9))
    engine.unsubscribe(token)
    engine.subscribe(analysis_runs_only(new_store.insert))
    plan = analyze(
        peak, [collected.run], catalog=None, root=new_store.root, writers={"spectrum": "BAS_HDF5"}
    )
    (uid,) = engine(plan)
    raw_uid = collected.run.start["uid"]
    if keeps(new_store):
        assert new_store.derived_from(raw_uid) == [uid]
        names = [name for name, _ in new_store.documents(uid)]
        assert names[-1] == "stop"
        assert "stream_resource" in names
        assert (new_store.root / uid / "fit" / "spectrum.h5").is_file()
    else:  # the devices wrote into the null store's root; removed at the run's stop
        assert uid not in new_store
        assert new_store.derived_from(raw_uid) == []
        assert files_under(new_store.root) == []


@pytest.mark.parametrize("kind", ["null", "jsonl"])
def test_bas_save_takes_the_new_stores(tmp_path, capsys, kind):
    from bluesky_analysis_store.cli import main

    ingest = tmp_path / "ingest"
    ingest.mkdir()
    np.save(ingest / "spectrum.npy", np.arange(12.0))
    target = "null:" if kind == "null" else f"jsonl:{tmp_path / 'laptop'}"
    capsys.readouterr()
    assert main(["save", str(ingest), "--store", target, "--parent", PARENT_UID]) == 0
    uid = capsys.readouterr().out.strip()
    assert uuid.UUID(uid).version == 4
    if kind == "jsonl":  # then found by the store's directory alone
        with AnalysisStore.open(tmp_path / "laptop") as store:
            assert store.derived_from(PARENT_UID) == [uid]


def test_replay_into_a_served_store_takes_the_write_key(bas_server, tmp_path, monkeypatch, capsys):
    """``bas replay DIR --into URI``: the runs of a JSONL store go into a real ``bas serve``
    (SQLite and PostgreSQL) with its write key, their files copied under the served root; the
    read-only key inserts nothing and copies nothing."""
    from served import READ_KEY, WRITE_KEY

    from bluesky_analysis_store.cli import main

    laptop = tmp_path / "laptop"
    label = f"served {bas_server.backend} {uuid.uuid4()}"  # the session's server is shared
    with AnalysisStore.open(f"jsonl:{laptop}") as offline:
        first = save(offline, label)
        second = save(offline, f"{label} 2", parents=[first])
    root = bas_server.directory / "files"
    replay = ["replay", str(laptop), "--into", bas_server.uri, "--root", str(root)]

    monkeypatch.setenv("BAS_API_KEY", READ_KEY)
    capsys.readouterr()
    assert main(replay) == 1
    refused = capsys.readouterr().out
    assert "replayed 0 run(s)" in refused
    assert refused.count("403: this key is read-only") == 2
    assert not (root / first).exists()

    monkeypatch.setenv("BAS_API_KEY", WRITE_KEY)
    assert main(replay) == 0
    out = capsys.readouterr().out
    assert f"inserted run {first} (" in out
    assert f"inserted run {second} (" in out
    with bas_server.store(WRITE_KEY) as served:
        assert served.derived_from(first) == [second]
        image = served[first]["primary"]["image"].read()
        np.testing.assert_array_equal(image, np.stack([d["primary"]["image"] for d in data()]))
    assert (root / first / "primary" / "image.h5").is_file()
    assert main(replay) == 0  # again: nothing new
    assert "replayed 0 run(s)" in capsys.readouterr().out
