"""The store goes away mid-session (issue 6, part 3): a real ``bas serve`` is stopped while a
RunEngine emits analysis runs into it (and a ``save`` follows); the documents go to the durable
local spool, the RunEngine is not aborted, and ``bas replay`` (a real subprocess) inserts them
once the server is back. Every document is counted; each replayed run equals a direct insert of
the same documents.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from bluesky import RunEngine
from helpers import PARENT_UID, figure, free_port, make_provenance
from served import WRITE_KEY, Server, running_server

from bluesky_analysis_store import AnalysisStore, analyze, check_store, compose_analysis_run
from bluesky_analysis_store.insert._spool import read_spool_file, spool_files


@dataclass
class Parent:
    """A raw parent run as the analyze plan sees one (only its start document matters)."""

    metadata: dict[str, Any]


PARENT = Parent({"start": {"uid": PARENT_UID}})


def reduce_frames(*parents: Any, frames: int = 4, scale: float = 1.0) -> Any:
    """An analysis whose run has an external key (files) and inline keys (events)."""
    data_dicts = [
        {
            "primary": {
                "image": np.full((8, 6), scale * i, dtype="f4"),
                "total": float(48 * scale * i),
                "frame": i,
            }
        }
        for i in range(frames)
    ]
    return data_dicts, {"sample": "SA-spool"}


reduce_frames.version = "1.2"  # type: ignore[attr-defined]


class Recorder:
    """Every document the RunEngine emitted, as it was emitted (deep copies), per run."""

    def __init__(self) -> None:
        self.runs: dict[str, list[tuple[str, dict[str, Any]]]] = {}
        self._current: str | None = None

    def __call__(self, name: str, doc: dict[str, Any]) -> None:
        if name == "start":
            self._current = doc["uid"]
            self.runs[doc["uid"]] = []
        assert self._current is not None
        self.runs[self._current].append((name, copy.deepcopy(doc)))


class StopServerAfter:
    """Stops the server the moment the RunEngine emits the given document of a run."""

    def __init__(self, stop: Any, run_number: int, name: str, count: int) -> None:
        self.stop, self.run_number, self.name, self.count = stop, run_number, name, count
        self._runs = 0
        self._seen = 0
        self.stopped = False

    def __call__(self, name: str, doc: dict[str, Any]) -> None:
        if name == "start":
            self._runs += 1
        if self._runs == self.run_number and name == self.name and not self.stopped:
            self._seen += 1
            if self._seen == self.count:
                self.stop()
                self.stopped = True


@pytest.fixture
def fast_failing_client(monkeypatch: pytest.MonkeyPatch) -> None:
    """tiled's client retries a refused connection for up to 45 s by default (documented in
    the how-to); a beamline lowers TILED_RETRY_ATTEMPTS the same way."""
    import tiled.client.utils

    monkeypatch.setattr(tiled.client.utils, "TILED_RETRY_ATTEMPTS", 2)


def _same_run(replayed: Any, direct: Any) -> None:
    """Two runs in tiled hold the same documents: start, stop, descriptors, every event value
    and every external array."""
    assert replayed.metadata["start"] == direct.metadata["start"]
    assert replayed.metadata["stop"] == direct.metadata["stop"]
    assert list(replayed) == list(direct)
    for stream in direct:
        assert replayed[stream].metadata == direct[stream].metadata  # the descriptors
        pd.testing.assert_frame_equal(
            replayed[stream].base["internal"].read(), direct[stream].base["internal"].read()
        )
        for key in direct[stream].base:
            if key == "internal":
                continue
            ours, theirs = replayed[stream][key].read(), direct[stream][key].read()
            assert ours.dtype == theirs.dtype, key
            np.testing.assert_array_equal(ours, theirs)


def _spooled(store: AnalysisStore) -> dict[str, list[tuple[str, dict[str, Any]]]]:
    assert store.spool is not None
    return {(docs := read_spool_file(p))[0][1]["uid"]: docs for p in spool_files(store.spool)}


def _replay_command(server: Server, root: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "bluesky_analysis_store.cli", "replay"]
    return subprocess.run(
        [*command, "--store", server.uri, "--root", str(root)],
        env={**os.environ, "BAS_API_KEY": WRITE_KEY},
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[ExitStack, Path, int]]:
    """A ``bas serve`` directory and port; the test starts and stops the server itself."""
    with ExitStack() as stack:
        yield stack, tmp_path / "served", free_port()


@pytest.mark.slow
def test_store_stopped_mid_run_spools_and_replay_inserts_every_document(
    served: tuple[ExitStack, Path, int], fast_failing_client: None, capsys: Any
) -> None:
    stack, directory, port = served
    servers = ExitStack()  # the server that runs now; stopped mid-run, started again
    stack.callback(servers.close)
    server = servers.enter_context(running_server(directory, port, backend="sqlite"))
    root = directory / "files"
    store = stack.enter_context(AnalysisStore.open(server.uri, api_key=WRITE_KEY, root=root))
    assert store.spool == root / ".bas-spool"

    recorder = Recorder()
    # run 1 goes in whole; the server stops during run 2 (after its second event); run 3
    # starts while the server is gone
    stopper = StopServerAfter(servers.close, run_number=2, name="event", count=2)
    engine = RunEngine({})
    for subscriber in (store.insert, recorder, stopper):
        engine.subscribe(subscriber)
    uids = []
    for scale in (1.0, 2.0, 3.0):
        plan = analyze(
            reduce_frames, [PARENT], catalog=None, root=root, parameters={"scale": scale}
        )
        uids += engine(plan)
    assert stopper.stopped
    # the RunEngine was never aborted: every run ended in success
    assert [recorder.runs[uid][-1][1]["exit_status"] for uid in uids] == ["success"] * 3
    # a save while the server is gone (a LiveAnalysis worker saves this way): to the spool
    data, md = reduce_frames(PARENT, scale=4.0)
    saved = store.save(data, md, provenance=make_provenance(parameters={"saved": "offline"}))
    assert saved not in recorder.runs

    # the spool holds runs 2 and 3, every document of each as emitted, and the saved run
    spooled = _spooled(store)
    assert sorted(spooled) == sorted([*uids[1:], saved]), "run 1 went in whole: no file kept"
    for uid in uids[1:]:
        assert [name for name, _ in spooled[uid]] == [name for name, _ in recorder.runs[uid]]
        assert comparable(spooled[uid]) == comparable(recorder.runs[uid])
    assert [name for name, _ in spooled[saved]] == [
        "start",
        "descriptor",
        "stream_resource",
        "stream_datum",
        "event_page",
        "stop",
    ]
    recorder.runs[saved] = spooled[saved]  # its documents, as save made them
    uids.append(saved)
    produced = sum(len(recorder.runs[uid]) for uid in uids)
    spooled_count = sum(len(docs) for docs in spooled.values())

    # the server comes back (same directory, same port); `bas replay` inserts the spool
    servers.enter_context(running_server(directory, port, backend="sqlite"))
    assert uids[1] in store, "run 2 was half inserted when the server stopped"
    assert "stop" not in store[uids[1]].metadata or not store[uids[1]].metadata["stop"]
    assert uids[2] not in store
    result = _replay_command(server, root)
    assert result.returncode == 0, result.stdout + result.stderr
    replayed = 0
    for uid in uids[1:]:
        line = f"inserted run {uid} ({len(recorder.runs[uid])} documents)"
        assert line in result.stdout, result.stdout
        replayed += len(recorder.runs[uid])
    assert spool_files(store.spool) == []

    # each run equals what a direct insert of the same documents makes
    from tiled.client import from_uri

    from bluesky_analysis_store.store._catalog import runs_container

    client = from_uri(server.uri, api_key=WRITE_KEY)
    stack.callback(client.context.close)
    direct = AnalysisStore(runs_container(client, "direct"), root, spool=None)
    stored_events = 0
    for uid in uids:
        for name, doc in recorder.runs[uid]:
            direct.insert(name, copy.deepcopy(doc))
        _same_run(store[uid], direct[uid])
        stored_events += len(store[uid]["primary"].base["internal"].read())
    emitted_events = sum(
        len(doc["seq_num"]) if name == "event_page" else 1
        for uid in uids
        for name, doc in recorder.runs[uid]
        if name in ("event", "event_page")
    )
    assert stored_events == emitted_events == 16
    assert sorted(store.derived_from(PARENT_UID)) == sorted(uids)
    assert (root / saved / "primary" / "image.h5").is_file()
    counts = Counter(name for uid in uids for name, _ in recorder.runs[uid])
    after_outage = sum(len(recorder.runs[uid]) for uid in uids[1:])
    figure(
        capsys,
        "spool",
        "a real bas serve is stopped during the second of three analysis runs a RunEngine "
        "emits, and a store.save follows; the RunEngine finishes all three, the spool keeps "
        "every document after the outage, bas replay inserts them, and each run equals a "
        "direct insert",
        backend="sqlite",
        runs=len(uids),
        produced=produced,
        spooled=spooled_count,
        replayed=replayed,
        events_emitted=emitted_events,
        events_stored=stored_events,
        lost=(after_outage - spooled_count)
        + (after_outage - replayed)
        + (emitted_events - stored_events),
        document_types=len(counts),
    )


def comparable(documents: list[tuple[str, dict[str, Any]]]) -> Any:
    """Documents as JSON sees them (numpy values become numbers and lists)."""
    from bluesky_analysis_store.insert._insert import comparable as as_json

    return [(name, as_json(doc)) for name, doc in documents]


@pytest.mark.slow
def test_replay_leaves_runs_being_written_and_cut_off_runs_alone(
    served: tuple[ExitStack, Path, int], capsys: Any
) -> None:
    """A run still open in a live process is busy; once that process is gone without a stop,
    the run is incomplete: both stay in the spool, and fsck keeps the files they refer to."""
    stack, directory, port = served
    server = stack.enter_context(running_server(directory, port, backend="sqlite"))
    root = directory / "files"
    writer = AnalysisStore.open(server.uri, api_key=WRITE_KEY, root=root)
    reader = stack.enter_context(AnalysisStore.open(server.uri, api_key=WRITE_KEY, root=root))
    composed = compose_analysis_run(
        [{"primary": {"image": np.ones((5, 5), "f4"), "x": 1.0}}],
        {},
        root=root,
        provenance=make_provenance(parameters={"spool": "cut"}),
    )
    documents = list(composed)
    for name, doc in documents[:-1]:  # everything but the stop
        writer.insert(name, doc)
    busy = reader.replay()
    assert [p.name.startswith(f"{composed.uid}-") for p in busy.busy] == [True]
    assert busy.pending == 0

    writer.close()  # its process ends without the stop: the file is kept, unlocked
    cut = reader.replay()
    assert cut.pending == 1
    ((path, why),) = cut.incomplete
    assert "no stop document" in why
    assert len(read_spool_file(path)) == len(documents) - 1

    report = check_store(reader, grace=0)
    assert report.spooled == (path,)
    assert not set(composed.files) & set(report.orphaned_files)  # waiting for a person
    assert [issue.uid for issue in report.incomplete] == [composed.uid]  # the half run
    figure(
        capsys,
        "spool",
        "a spool file still being written is left alone by replay; once its writer is gone "
        "without a stop it is kept as incomplete, and fsck keeps the files it refers to",
        busy=len(busy.busy),
        incomplete=len(cut.incomplete),
        documents_kept=len(read_spool_file(path)),
        spooled_files_orphaned=len(set(composed.files) & set(report.orphaned_files)),
    )


def test_a_run_inserted_whole_leaves_no_spool_file_and_bad_documents_still_raise(
    tiled_catalog: Any, tmp_path: Path
) -> None:
    from bluesky_analysis_store import InvalidDocumentError

    store = AnalysisStore(
        tiled_catalog.new_runs_container(), tiled_catalog.new_root(), spool=tmp_path / "spool"
    )
    composed = compose_analysis_run(
        [{"primary": {"x": 1.0}}], {}, provenance=make_provenance(parameters={"spool": "ok"})
    )
    for name, doc in composed:
        store.insert(name, doc)
        if name == "start":
            assert len(spool_files(tmp_path / "spool")) == 1  # written ahead of the insert
    assert spool_files(tmp_path / "spool") == []
    assert composed.uid in store.derived_from(PARENT_UID)

    bad = compose_analysis_run(
        [{"primary": {"x": 1.0}}], {}, provenance=make_provenance(parameters={"spool": "bad"})
    )
    docs = list(bad)
    store.insert(*docs[0])
    store.insert(*docs[1])
    name, event = docs[2]
    event["data"]["x"] = "not a number"
    with pytest.raises(InvalidDocumentError, match=r"data\['x'\].*not a number"):
        store.insert(name, event)
    store.close()  # the bad run never ended: its file is kept (whole, for a person to see)
    ((kept,),) = [spool_files(tmp_path / "spool")]
    assert [n for n, _ in read_spool_file(kept)] == ["start", "descriptor", "event"]
