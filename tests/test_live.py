"""LiveAnalysis subscribed to a real RunEngine scanning ophyd.sim devices into real tiled."""

import gc
import logging
import threading

import numpy as np
import pytest
from helpers import PARENT_UID, make_provenance

from bluesky_analysis_store import (
    AnalysisStore,
    ImageProfilePeak,
    LiveAnalysis,
    MetadataPacket,
    ProvenanceError,
    analysis_runs_only,
    normalize_and_bin,
    raw_runs_only,
)


@pytest.fixture
def store(tiled_catalog):
    return AnalysisStore(
        tiled_catalog.new_runs_container(),
        tiled_catalog.new_root(),
        raw=tiled_catalog.new_runs_container(),
    )


@pytest.fixture
def engine(store):
    """A RunEngine writing raw runs to the raw catalog and analysis runs to the store."""
    from bluesky import RunEngine
    from bluesky_tiled_plugins.writing.tiled_writer import TiledWriter

    engine = RunEngine({})
    engine.subscribe(raw_runs_only(TiledWriter(store.raw)))
    engine.subscribe(analysis_runs_only(store.insert))
    return engine


@pytest.fixture(scope="module")
def camera():
    """An ophyd.sim signal giving a 24×32 image whose spot follows the motor: x = 16 + 3·motor."""
    from ophyd.sim import SynSignal, motor

    y, x = np.mgrid[0:24, 0:32]

    def image():
        spot = np.exp(-((x - 16 - 3 * motor.position) ** 2) / 8.0 - (y - 12) ** 2 / 20.0)
        return 100 * spot + 1.0

    return SynSignal(func=image, name="cam")


def _scan(engine, detectors, num=11):
    from bluesky.plans import scan
    from ophyd.sim import motor

    (uid,) = engine(scan(detectors, motor, -1, 1, num))
    return uid


def test_callback_path_saves_a_derived_run_with_the_raw_run_as_parent(store, engine):
    from bluesky.plans import scan
    from ophyd.sim import det, motor, noisy_det

    parameters = {"detector": "det", "monitor": "noisy_det", "bins": 4}
    live = LiveAnalysis(normalize_and_bin, store, parameters=parameters)
    engine.subscribe(live)
    packet = MetadataPacket()
    packet.set_sample("LaB6 standard", sample_composition="LaB6")
    raw_uid = engine(scan([det, noisy_det], motor, -1, 1, 11), **packet.as_metadata())[0]
    live.wait(timeout=120)

    assert live.failures == []
    (derived,) = store.derived_from(raw_uid)
    assert live.saved == {raw_uid: derived}
    start = store[derived].metadata["start"]
    assert start["analysis_name"] == "normalize_and_bin"
    assert start["analysis_version"] == "1.0"
    # recorded as the analysis' parameters model gives them, defaults included
    recorded = {"detector": "det", "monitor": "noisy_det", "x": "motor", "bins": 4}
    assert start["provenance"]["parameters"] == {**recorded, "stream": "primary"}
    assert start["parent_uids"] == [raw_uid]
    assert start["sample_name"] == "LaB6 standard"  # the sample follows its data
    assert store.of_sample(packet["sample_uuid"]) == [derived]
    # the same analysis on the stored raw run gives the same numbers as the live one did
    expected, _ = normalize_and_bin(store.raw[raw_uid], **parameters)
    binned = store[derived]["binned"].read()
    np.testing.assert_array_equal(binned["mean"], [d["binned"]["mean"] for d in expected])
    assert int(binned["count"].sum()) == 11


def test_streaming_analysis_sees_each_event_and_fits_the_spot(store, engine, camera):
    from ophyd.sim import motor

    class CountingProfilePeak(ImageProfilePeak):
        events = 0

        def event(self, stream, data):
            type(self).events += 1
            super().event(stream, data)

    live = LiveAnalysis(CountingProfilePeak(image="cam"), store, worker=False)
    engine.subscribe(live)
    raw_uid = _scan(engine, [camera, motor], num=9)

    assert CountingProfilePeak.events == 9
    (derived,) = store.derived_from(raw_uid)
    profiles = store[derived]["profiles"].read()
    positions = np.linspace(-1, 1, 9)
    np.testing.assert_allclose(profiles["peak_center"], 16 + 3 * positions, atol=1e-6)
    assert store[derived]["profiles"]["profile"].read().shape == (9, 32)
    assert store[derived].metadata["start"]["provenance"]["parameters"]["image"] == "cam"


def test_failing_analysis_leaves_the_raw_run_intact_and_is_recorded(store, engine, caplog):
    from ophyd.sim import det

    def broken(run):
        raise ValueError("calibration file missing")

    broken.version = "0.3"
    live = LiveAnalysis(broken, store)
    good = LiveAnalysis(normalize_and_bin, store, parameters={"bins": 3})
    engine.subscribe(live)
    engine.subscribe(good)
    with caplog.at_level(logging.ERROR, logger="bluesky_analysis_store.live"):
        raw_uid = _scan(engine, [det])  # the RunEngine does not raise
        live.wait(timeout=120)
        good.wait(timeout=120)

    raw = store.raw[raw_uid]
    assert raw.metadata["stop"]["exit_status"] == "success"
    assert raw["primary"]["det"].read().shape == (11,)
    logged = [r.getMessage() for r in caplog.records]
    assert any(raw_uid in message and "calibration" in message for message in logged)
    (failure,) = live.failures
    assert failure.raw_uid == raw_uid
    assert failure.error == "ValueError: calibration file missing"
    # recorded in the store: found later, hidden from result queries
    (recorded,) = store.failed_analyses("broken")
    assert recorded["uid"] == failure.record_uid
    assert recorded["parent_uids"] == [raw_uid]
    assert recorded["reason"] == "ValueError: calibration file missing"
    assert store.derived_from(raw_uid) == [good.saved[raw_uid]]
    assert failure.record_uid in store.derived_from(raw_uid, include_incomplete=True)
    assert store.missing_analysis("broken") == [raw_uid]
    assert store.missing_analysis("normalize_and_bin") == []


def test_slow_analysis_runs_on_the_worker_and_does_not_stall_the_scan(store, engine):
    from ophyd.sim import det

    release = threading.Event()

    def slow(run):
        if not release.wait(timeout=60):
            raise TimeoutError("the scan never finished while this analysis waited")
        return [{"result": {"total": float(run["primary"]["det"].sum())}}], {}

    slow.version = "1.0"
    live = LiveAnalysis(slow, store)  # worker=True is the default
    engine.subscribe(live)
    raw_uid = _scan(engine, [det])
    # the RunEngine returned while the analysis still waits for us
    with pytest.raises(TimeoutError, match="still running"):
        live.wait(timeout=0.01)
    release.set()
    live.wait(timeout=120)
    assert live.failures == []
    (derived,) = store.derived_from(raw_uid)
    total = store[derived]["result"].read()["total"][0]
    assert total == pytest.approx(float(store.raw[raw_uid]["primary"]["det"].read().sum()))


def test_subscription_survives_garbage_collection(store, engine):
    from ophyd.sim import det

    # nobody but the RunEngine holds the LiveAnalysis (bluesky keeps bound methods weakly)
    engine.subscribe(LiveAnalysis(normalize_and_bin, store, parameters={"bins": 2}, worker=False))
    gc.collect()
    raw_uid = _scan(engine, [det])
    assert len(store.derived_from(raw_uid)) == 1


def test_analysis_runs_only_keeps_a_bound_method_alive(tiled_catalog):
    """``analysis_runs_only(AnalysisStore(...).insert)`` holds the store strongly."""
    from bluesky import RunEngine
    from bluesky.plans import count
    from ophyd.sim import det

    from bluesky_analysis_store import ProvenancePolicy
    from bluesky_analysis_store.provenance._start_metadata import provenance_metadata

    container = tiled_catalog.new_runs_container()
    engine = RunEngine({})
    engine.subscribe(analysis_runs_only(AnalysisStore(container, tiled_catalog.new_root()).insert))
    gc.collect()
    md = provenance_metadata(make_provenance(name="kept"), ProvenancePolicy())
    (uid,) = engine(count([det], num=2), **md)
    engine(count([det], num=2))  # a raw run: not for the analysis store
    assert list(container) == [uid]


def test_filters_select_runs_and_analysis_runs_are_never_analysed(store, engine):
    from bluesky.plans import count, scan
    from ophyd.sim import det, motor

    from bluesky_analysis_store import ProvenancePolicy
    from bluesky_analysis_store.provenance._start_metadata import provenance_metadata

    live = LiveAnalysis(
        normalize_and_bin, store, parameters={"bins": 2}, plan_names=["scan"], worker=False
    )
    engine.subscribe(live)
    (counted,) = engine(count([det], num=3))  # plan not selected
    md = provenance_metadata(make_provenance(name="upstream"), ProvenancePolicy())
    (analysis_run,) = engine(count([det], num=3), **md)  # an analysis run
    scanned = _scan(engine, [det])
    assert list(live.saved) == [scanned]
    assert store.derived_from(counted) == []
    assert store.derived_from(analysis_run) == []

    only_x = LiveAnalysis(
        normalize_and_bin, store, accept=lambda start: start.get("purpose") == "x", worker=False
    )
    engine.subscribe(only_x)
    ignored = _scan(engine, [det])
    (chosen,) = engine(scan([det], motor, -1, 1, 5), purpose="x")
    assert list(only_x.saved) == [chosen]
    assert ignored not in only_x.saved


def test_failed_scan_is_skipped(store, engine):
    from bluesky.plan_stubs import trigger_and_read
    from bluesky.preprocessors import run_wrapper
    from ophyd.sim import det

    def interrupted():
        yield from trigger_and_read([det])
        raise RuntimeError("sample fell off")

    live = LiveAnalysis(normalize_and_bin, store, worker=False)
    engine.subscribe(live)
    with pytest.raises(RuntimeError, match="sample fell off"):
        engine(run_wrapper(interrupted()))
    (raw_uid,) = list(store.raw)
    assert store.raw[raw_uid].metadata["stop"]["exit_status"] == "fail"
    assert live.saved == {}
    assert live.failures == []


def test_source_gives_the_analysis_the_stored_raw_run(store, engine):
    from ophyd.sim import det

    seen = []

    def from_catalog(run):
        seen.append(type(run).__name__)
        return [{"result": {"n": int(run["primary"].read()["det"].size)}}], {}

    from_catalog.version = "1.0"
    engine.subscribe(LiveAnalysis(from_catalog, store, source=store.raw, worker=False))
    raw_uid = _scan(engine, [det])
    assert seen == ["BlueskyRunV3"]  # the tiled client of the stored run
    assert store[store.derived_from(raw_uid)[0]]["result"].read()["n"][0] == 11


def test_analysis_without_version_is_refused_at_subscription(store):
    def unversioned(run):
        return [], {}

    with pytest.raises(ProvenanceError, match="'unversioned' has no version"):
        LiveAnalysis(unversioned, store)


def test_failure_records_on_sqlite_and_postgresql(any_catalog):
    store = AnalysisStore(any_catalog.new_runs_container(), any_catalog.new_root())
    provenance = make_provenance(name="reduce_spectrum")
    ok = store.save([{"r": {"x": 1.0}}], {}, provenance=provenance)
    failed = store.record_failure(provenance, "RuntimeError: detector saturated")
    assert store.derived_from(PARENT_UID) == [ok]
    assert sorted(store.derived_from(PARENT_UID, include_incomplete=True)) == sorted([ok, failed])
    assert store.with_lineage(provenance.lineage_hash()) == [ok]
    assert store.by_analysis("reduce_spectrum") == [ok]
    (record,) = store.failed_analyses()
    assert record["uid"] == failed
    assert record["reason"] == "RuntimeError: detector saturated"
    assert store.missing_analysis("reduce_spectrum", [PARENT_UID, "other"]) == ["other"]
