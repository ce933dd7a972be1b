"""AnalysisDevice and the analyze plan: a real RunEngine, ophyd.sim and an embedded store."""

from __future__ import annotations

import tempfile
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
from bluesky import RunEngine
from bluesky import plans as bp
from bluesky import preprocessors as bpp
from bluesky.protocols import (
    Readable,
    Stageable,
    Triggerable,
    WritesExternalAssets,
    WritesStreamAssets,
)
from event_model import Filler

from bluesky_analysis_store import (
    AnalysisDevice,
    AnalysisInputError,
    AnalysisStore,
    AnalysisStoreError,
    HDF5Writer,
    ProvenanceError,
    UnknownSpecError,
    analysis_sink,
    analyze,
    capture_provenance,
    compose_analysis_run,
    records_to_dataframe,
)
from bluesky_analysis_store.provenance._provenance import canonical_json


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    """``ophyd.sim``, imported with the temporary directory it makes inside pytest's."""
    previous = tempfile.tempdir
    tempfile.tempdir = str(tmp_path_factory.mktemp("ophyd-sim"))
    try:
        import ophyd.sim
    finally:
        tempfile.tempdir = previous
    return ophyd.sim


@pytest.fixture(scope="module")
def store(tiled_catalog):
    """One store for the module, with its raw catalog, on the session's tiled app."""
    return AnalysisStore(
        tiled_catalog.new_runs_container(),
        tiled_catalog.new_root(),
        raw=tiled_catalog.new_runs_container(),
    )


def _engine(*subscribers, **kwargs):
    engine = RunEngine({}, **kwargs)
    for subscriber in subscribers:
        engine.subscribe(subscriber)
    return engine


def _raw_writer(store):
    from bluesky_tiled_plugins.writing.tiled_writer import TiledWriter

    return TiledWriter(store.raw)


def _bit_exact(actual, expected):
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert (actual.dtype, actual.shape) == (expected.dtype, expected.shape)
    assert actual.tobytes() == expected.tobytes()


def _no_part_files(root):
    assert not [p for p in Path(root).rglob("*") if p.name.endswith(".part")]


class Recorder:
    """``compute`` for a device: derived values from a real detector, each one remembered."""

    def __init__(self, detector, field):
        self.detector, self.field, self.values = detector, field, []

    def __call__(self):
        x = float(self.detector.read()[self.field]["value"])
        n = len(self.values)
        values = {
            "profile": np.linspace(0, 1, 40) * x + n,  # 40 elements: a file (BAS_HDF5)
            "spot": (np.arange(12, dtype="u2").reshape(3, 4) + n),
            "table": pd.DataFrame({"a": np.arange(5.0) * x, "b": np.arange(5) + n}),
            "total": x * 2,
            "label": f"point {n}",
        }
        self.values.append(values)
        return values


def test_device_follows_the_bluesky_protocols(tmp_path):
    device = AnalysisDevice(lambda: {"x": 1.0}, name="calc", root=tmp_path)
    for protocol in (Readable, Triggerable, Stageable, WritesStreamAssets, WritesExternalAssets):
        assert isinstance(device, protocol), protocol


def test_count_with_a_real_detector_reads_back_through_tiled(sim, store):
    recorder = Recorder(sim.noisy_det, "noisy_det")
    device = AnalysisDevice(recorder, name="calc", root=store.root, writers={"spot": "BAS_NPY"})
    docs = []
    engine = _engine(_raw_writer(store), lambda name, doc: docs.append((name, doc)))
    (uid,) = engine(bp.count([sim.noisy_det, device], num=3))

    assert len(recorder.values) == 3  # bluesky describes after the first trigger: no extra call
    primary = store.raw[uid]["primary"]
    _bit_exact(primary["profile"].read(), np.stack([v["profile"] for v in recorder.values]))
    _bit_exact(primary["spot"].read(), np.stack([v["spot"] for v in recorder.values]))
    for i, values in enumerate(recorder.values):
        pd.testing.assert_frame_equal(
            records_to_dataframe(primary["table"].read()[i]), values["table"], check_exact=True
        )
    events = primary.read()
    assert list(events["total"].values) == [v["total"] for v in recorder.values]
    assert list(events["total"].values) == list(events["noisy_det"].values * 2)
    assert list(events["label"].values) == ["point 0", "point 1", "point 2"]

    descriptor = next(doc for name, doc in docs if name == "descriptor")
    assert {k: v.get("external") for k, v in descriptor["data_keys"].items()} == {
        "noisy_det": None,
        "profile": "STREAM:",
        "spot": "STREAM:",
        "table": "STREAM:",
        "total": None,
        "label": None,
    }
    resources = [doc for name, doc in docs if name == "stream_resource"]
    assert sorted(Path(r["uri"].removeprefix("file://")) for r in resources) == sorted(
        device.published
    )
    assert [p.name for p in sorted(device.published)] == ["profile.h5", "spot.npy", "table.h5"]
    assert all(p.is_file() and p.parent.name == "calc" for p in device.published)
    assert all(doc["run_start"] == uid for doc in resources)
    datums = [doc["indices"] for name, doc in docs if name == "stream_datum"]
    assert datums == [{"start": i, "stop": i + 1} for i in range(3) for _ in range(3)]
    _no_part_files(store.root)


def test_scan_then_a_new_staging_gets_new_files(sim, store):
    recorder = Recorder(sim.det, "det")
    device = AnalysisDevice(recorder, name="calc", root=store.root)
    (uid,) = _engine(_raw_writer(store))(bp.scan([sim.det, device], sim.motor, -1, 1, 5))
    run = store.raw[uid]["primary"]
    _bit_exact(run["profile"].read(), np.stack([v["profile"] for v in recorder.values]))
    np.testing.assert_array_equal(run.read()["motor"].values, [-1.0, -0.5, 0.0, 0.5, 1.0])
    first_files = device.published
    _engine()(bp.count([sim.det, device], num=2))  # a second run, not stored
    assert not set(first_files) & set(device.published)
    assert all(p.is_file() for p in (*first_files, *device.published))
    with h5py.File(device.published[0], "r") as f:  # the file holds exactly what was computed
        _bit_exact(f["data"][()], np.stack([v["profile"] for v in recorder.values[5:]]))


def test_resource_form_fills_with_our_handlers(sim, store):
    recorder = Recorder(sim.noisy_det, "noisy_det")
    device = AnalysisDevice(
        recorder,
        name="calc",
        root=store.root,
        writers={"spot": "BAS_TIFF"},
        asset_form="resource",
    )
    docs = []
    tiled = analysis_sink(store.raw, store.registry)
    (uid,) = _engine(lambda name, doc: docs.append((name, doc)), tiled)(
        bp.count([sim.noisy_det, device], num=2)
    )
    assert {doc["spec"] for name, doc in docs if name == "resource"} == {
        "BAS_HDF5",
        "BAS_TIFF",
        "BAS_TABLE_HDF5",
    }
    descriptor = next(doc for name, doc in docs if name == "descriptor")
    assert descriptor["data_keys"]["profile"]["external"] == "FILESTORE:"
    filled = []
    with Filler(store.registry.handler_registry(), inplace=False) as filler:
        for name, doc in docs:
            name, doc = filler(name, doc)
            if name == "event":
                filled.append(doc["data"])
    assert len(filled) == 2
    for data, values in zip(filled, recorder.values, strict=True):
        _bit_exact(data["profile"], values["profile"])
        _bit_exact(data["spot"], values["spot"])
        pd.testing.assert_frame_equal(data["table"], values["table"], check_exact=True)
        assert data["total"] == values["total"]
    _bit_exact(
        store.raw[uid]["primary"]["spot"].read(), np.stack([v["spot"] for v in recorder.values])
    )


def test_describe_before_trigger_computes_once(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return {"x": 1.5, "image": np.zeros((5, 5), "i4"), "name": "a"}

    device = AnalysisDevice(compute, name="calc", root=tmp_path)
    keys = device.describe()
    assert len(calls) == 1
    assert keys["x"] == {"source": "analysis", "dtype": "number", "dtype_numpy": "<f8", "shape": []}
    assert keys["image"]["external"] == "STREAM:"
    assert keys["image"]["shape"] == [5, 5]
    assert "dtype_numpy" not in keys["name"]
    assert list(tmp_path.iterdir()) == []  # described, not written


@pytest.mark.parametrize(
    ("second", "error", "match"),
    [
        ({"x": 2.0, "image": np.zeros(21)}, AnalysisInputError, r"\['image'\] has dtype .*\(21,\)"),
        ({"x": 2.0, "image": np.zeros(20, "f4")}, AnalysisInputError, r"\['image'\].* <f4"),
        ({"x": 2.0}, AnalysisInputError, r"missing \['image'\]"),
        ({"x": float("nan"), "image": np.zeros(20)}, AnalysisInputError, r"\['x'\].*not finite"),
        ([1, 2], AnalysisInputError, "must return a non-empty mapping"),
    ],
)
def test_a_value_that_changes_is_a_clear_error(tmp_path, second, error, match):
    results = iter([{"x": 1.0, "image": np.ones(20)}, second])
    device = AnalysisDevice(lambda: next(results), name="calc", root=tmp_path)
    with pytest.raises(error, match=match):
        _engine()(bp.count([device], num=2))
    # the RunEngine unstaged the device: the first frame's file has its final name
    (published,) = device.published
    assert published.name == "image.h5"
    _no_part_files(tmp_path)


def test_device_refuses_bad_configuration(tmp_path):
    with pytest.raises(AnalysisInputError, match=r"name 'a\.b' is not accepted"):
        AnalysisDevice(dict, name="a.b", root=tmp_path)
    with pytest.raises(AnalysisInputError, match="asset_form='datum'"):
        AnalysisDevice(dict, name="calc", root=tmp_path, asset_form="datum")
    with pytest.raises(UnknownSpecError, match="'NOPE'"):
        AnalysisDevice(dict, name="calc", root=tmp_path, writers={"x": "NOPE"})
    device = AnalysisDevice(lambda: {"time": 1.0}, name="calc", root=tmp_path)
    with pytest.raises(AnalysisInputError, match="'time' is reserved"):
        device.trigger()
    device = AnalysisDevice(lambda: {"x": np.zeros(50)}, name="calc", root=tmp_path)
    with pytest.raises(AnalysisStoreError, match="to files but is not staged"):
        device.trigger()
    missing = AnalysisDevice(lambda: {"x": 1.0}, name="calc", root=tmp_path / "missing")
    with pytest.raises(AnalysisInputError, match="not an existing directory"):
        missing.stage()


# -- the analyze plan ---------------------------------------------------------------------------


def fit_peak(raw_run, *, threshold=0.0):
    """An analysis of one raw scan: per point a normalized value and a window, then a fit."""
    table = raw_run["primary"].read()
    x = np.asarray(table["motor"], dtype=float)
    y = np.asarray(table["det"], dtype=float)
    weights = np.clip(y - threshold, 0, None)
    center = float((weights * x).sum() / weights.sum())
    data_dicts = [
        {"profile": {"normalized": yi / y.max(), "window": np.linspace(xi - 1, xi + 1, 20) * yi}}
        for xi, yi in zip(x, y, strict=True)
    ]
    curve = pd.DataFrame({"x": x, "y": y}, index=pd.Index(np.arange(len(x)) * 2, name="n"))
    data_dicts[-1]["fit"] = {"center": center, "curve": curve, "model": "moments"}
    return data_dicts, {"method": "moments"}


fit_peak.version = "2.1"


def compare(*runs):
    """An analysis of several parents: one event per parent."""
    data_dicts = [
        {"summary": {"peak": float(np.max(run["primary"].read()["det"])), "points": np.arange(30)}}
        for run in runs
    ]
    return data_dicts, None


compare.version = "0.3"


@pytest.fixture(scope="module")
def raw_uids(sim, store):
    """Two raw scans (ophyd.sim, real RunEngine) in the store's raw catalog."""
    engine = _engine(_raw_writer(store))
    uids = []
    for center in (-0.5, 0.5):
        sim.det.center.put(center)
        (uid,) = engine(bp.scan([sim.det], sim.motor, -2, 2, 9))
        uids.append(uid)
    sim.det.center.put(0.0)
    return uids


@pytest.fixture(scope="module")
def raw_run(store, raw_uids):
    return store.raw[raw_uids[0]]


@pytest.mark.parametrize("asset_form", ["stream_resource", "resource"])
def test_analyze_emits_a_derived_run(store, raw_run, tmp_path, asset_form):
    raw_uid = raw_run.metadata["start"]["uid"]
    at_stop = []

    def check_files_at_stop(name, doc):
        if name == "stop":  # files must have their final names before the run is closed
            run_files = sorted(p.name for p in (store.root / doc["run_start"]).rglob("*"))
            at_stop.append(run_files)

    engine = _engine(store.insert, check_files_at_stop)
    (uid,) = engine(
        analyze(
            fit_peak,
            [raw_uid],  # looked up in the catalog
            catalog=store.raw,
            root=store.root,
            parameters={"threshold": 0.1},
            md={"operator": "tester"},
            asset_form=asset_form,
        )
    )
    assert at_stop == [["curve.h5", "fit", "profile", "window.h5"]]
    assert uid in store.derived_from(raw_uid)
    data_dicts, md = fit_peak(raw_run, threshold=0.1)

    run = store[uid]
    profile = run["profile"]
    _bit_exact(profile["window"].read(), np.stack([d["profile"]["window"] for d in data_dicts]))
    assert list(profile.read()["normalized"].values) == [
        d["profile"]["normalized"] for d in data_dicts
    ]
    fit = data_dicts[-1]["fit"]
    curve = records_to_dataframe(run["fit"]["curve"].read()[0], index="n")
    pd.testing.assert_frame_equal(curve, fit["curve"], check_exact=True)
    assert run["fit"].read()["center"].values.tolist() == [fit["center"]]

    start = run.metadata["start"]
    provenance = capture_provenance(fit_peak, parents=[raw_run], parameters={"threshold": 0.1})
    composed = compose_analysis_run(data_dicts, md, root=tmp_path, provenance=provenance)
    composed_start = composed.documents[0][1]
    for key in ("analysis_name", "analysis_version", "parent_uids", "lineage_hash"):
        assert start[key] == composed_start[key], key
    assert (start["analysis_name"], start["analysis_version"]) == ("fit_peak", "2.1")
    assert start["parent_uids"] == [raw_uid]
    assert (start["method"], start["operator"], start["plan_name"]) == (
        "moments",
        "tester",
        "analyze",
    )
    assert store.with_lineage(start["lineage_hash"])[-1] == uid
    window = store.root / uid / "profile" / "window.h5"
    with h5py.File(window, "r") as f:
        assert f.attrs["bluesky_analysis_store.run_uid"] == uid
        assert f.attrs["bluesky_analysis_store.provenance"] == canonical_json(start["provenance"])
    _no_part_files(store.root)


def test_analyze_several_parents_through_a_preprocessor(store, raw_uids, raw_run):
    engine = _engine(store.insert, call_returns_result=True)
    parents = [raw_run, raw_uids[1][:12]]  # a run and a partial uid
    plan = analyze(compare, parents, catalog=store.raw, root=store.root)
    seen = []

    def note(msg):
        seen.append(msg.command)
        return msg

    result = engine(bpp.msg_mutator(bpp.inject_md_wrapper(plan, {"proposal": "p-1"}), note))
    uid = result.plan_result
    assert result.run_start_uids == (uid,)
    assert result.exit_status == "success"
    assert seen[0] == "open_run"
    assert seen[-1] == "close_run"
    assert seen.index("unstage") < seen.index("close_run")
    start = store[uid].metadata["start"]
    assert start["proposal"] == "p-1"
    assert start["parent_uids"] == raw_uids
    assert all(uid in store.derived_from(parent) for parent in raw_uids)
    summary = store[uid]["summary"]
    _bit_exact(summary["points"].read(), np.stack([np.arange(30)] * 2))
    peaks = [float(np.max(store.raw[u]["primary"].read()["det"])) for u in raw_uids]
    assert summary.read()["peak"].values.tolist() == peaks


def _returning(result, version="1.0"):
    def analysis(*runs):
        return result

    if version is not None:
        analysis.version = version
    return analysis


GOOD = [{"p": {"x": 1.0, "image": np.zeros(20)}}]
BAD_INPUT = {
    "data_dicts not a list": (
        dict(analysis=_returning(({"p": {"x": 1.0}}, {}))),
        AnalysisInputError,
        "data_dicts must be a list",
    ),
    "shape changes": (
        dict(analysis=_returning(([*GOOD, {"p": {"x": 2.0, "image": np.zeros(21)}}], {}))),
        AnalysisInputError,
        r"data_dicts\[1\]\['p'\]\['image'\] has dtype",
    ),
    "NaN inline": (
        dict(analysis=_returning(([{"p": {"x": float("nan")}}], {}))),
        AnalysisInputError,
        r"\['x'\]: nan is not finite",
    ),
    "analysis md sets uid": (
        dict(analysis=_returning((GOOD, {"uid": "mine"}))),
        AnalysisInputError,
        r"md sets \['uid'\]",
    ),
    "md not JSON": (
        dict(md={"when": object()}),
        AnalysisInputError,
        r"md\['when'\].*not JSON-serializable",
    ),
    "md set twice": (
        dict(analysis=_returning((GOOD, {"a": 1})), md={"a": 2}),
        AnalysisInputError,
        r"both set \['a'\]",
    ),
    "bad start document": (
        dict(md={"scan_id": "seven"}),
        AnalysisInputError,
        "md does not make a valid start document",
    ),
    "unknown parent": (
        dict(parents=["ffffffff-ffff-4fff-8fff-ffffffffffff"]),
        AnalysisInputError,
        "parent 'ffffffff-ffff-4fff-8fff-ffffffffffff' is not found in the catalog",
    ),
    "not a parent": (dict(parents=[3.5]), AnalysisInputError, "parent 3.5 is not accepted"),
    "no version": (
        dict(analysis=_returning((GOOD, {}), version=None)),
        ProvenanceError,
        "code.version is missing",
    ),
    "unknown spec": (dict(writers={"image": "NOPE"}), UnknownSpecError, "'NOPE'"),
    "writer for no key": (
        dict(writers={"other": "BAS_NPY"}),
        AnalysisInputError,
        r"writers names keys \['other'\]",
    ),
    "resource func": (
        dict(
            writers={
                "image": {
                    "writer": HDF5Writer,
                    "spec": "BAS_HDF5",
                    "resource": {"func": lambda docs, key: (f"{key}.h5", {})},
                }
            }
        ),
        AnalysisInputError,
        r"writers\['image'\] has a DBEP 6 'resource' function",
    ),
    "returns one value": (
        dict(analysis=_returning(GOOD)),
        AnalysisInputError,
        "it must return \\(data_dicts, md\\)",
    ),
    "missing root": (dict(root="missing"), AnalysisInputError, "not an existing directory"),
}


@pytest.mark.parametrize("case", BAD_INPUT)
def test_bad_input_raises_before_the_run_opens(store, raw_run, case):
    kwargs, error, match = BAD_INPUT[case]
    kwargs = {"analysis": _returning((GOOD, {})), "parents": [raw_run], **kwargs}
    if kwargs.get("root") == "missing":
        kwargs["root"] = store.root / "missing"
    before = sorted(store.root.rglob("*"))
    runs_before = len(store)
    docs = []
    engine = _engine(store.insert, lambda name, doc: docs.append(name))
    with pytest.raises(error, match=match):
        engine(analyze(catalog=store.raw, root=kwargs.pop("root", store.root), **kwargs))
    assert docs == []
    assert sorted(store.root.rglob("*")) == before
    assert len(store) == runs_before
