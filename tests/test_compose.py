"""compose_analysis_run: the documents it emits, for both asset forms."""

import pickle
from collections import Counter, defaultdict

import numpy as np
import pandas as pd
import pytest
from event_model import DocumentNames, schema_validators
from helpers import compose

from bluesky_analysis_store import AnalysisInputError, NPYWriter
from bluesky_analysis_store.examples._demo import example_data_dicts

FORMS = ["stream_resource", "resource"]


def _by_name(run):
    docs = defaultdict(list)
    for name, doc in run:
        docs[name].append(doc)
    return docs


@pytest.mark.parametrize("asset_form", FORMS)
def test_documents_are_valid_and_ordered(tmp_path, asset_form):
    run = compose(
        example_data_dicts(points=6), {"analysis": "t"}, root=tmp_path, asset_form=asset_form
    )
    names = [name for name, _ in run]
    assert names[0] == "start"
    assert names[-1] == "stop"
    for name, doc in run:
        schema_validators[DocumentNames[name]].validate(doc)
    docs = _by_name(run)
    assert [d["name"] for d in docs["descriptor"]] == ["primary", "spectra", "fit"]
    assert docs["stop"][0]["exit_status"] == "success"
    assert docs["stop"][0]["num_events"] == {"primary": 6, "spectra": 1, "fit": 1}
    assert all(d["run_start"] == run.uid for d in docs["descriptor"])


@pytest.mark.parametrize("asset_form", FORMS)
def test_one_resource_per_stream_and_key_and_index_like_datums(tmp_path, asset_form):
    data = example_data_dicts(points=7)
    run = compose(data, {}, root=tmp_path, asset_form=asset_form)
    docs = _by_name(run)
    resources = docs[asset_form]
    assert len(resources) == 2 == len(run.files)  # roi_image and the interpolated table
    assert sorted(p.name for p in run.files) == ["interpolated.h5", "roi_image.h5"]
    if asset_form == "resource":
        per_resource = Counter(d["resource"] for d in docs["datum"])
        assert sorted(per_resource.values()) == [1, 7]
        assert [d["datum_kwargs"] for d in docs["datum"][:7]] == [
            {"point_number": i} for i in range(7)
        ]
    else:
        ranges = sorted(
            (d["indices"]["start"], d["indices"]["stop"], d["seq_nums"]["start"])
            for d in docs["stream_datum"]
        )
        assert ranges == [(0, 1, 1), (0, 7, 1)]


def test_data_keys_are_inferred(tmp_path):
    run = compose(example_data_dicts(points=3), {}, root=tmp_path)
    keys = {d["name"]: d["data_keys"] for d in _by_name(run)["descriptor"]}
    image = keys["primary"]["roi_image"]
    assert image["dtype"] == "array"
    assert image["dtype_numpy"] == "<f4"
    assert image["shape"] == [64, 64]
    assert image["external"] == "STREAM:"
    assert keys["primary"]["mu"] == {
        "source": "analysis",
        "dtype": "number",
        "dtype_numpy": "<f8",
        "shape": [],
    }
    assert keys["fit"]["model"]["dtype"] == "string"
    table = keys["spectra"]["interpolated"]
    assert table["dtype_numpy"] == [["energy", "<f8"], ["mu", "<f8"], ["mu_norm", "<f8"]]
    assert table["shape"] == [161]


def test_sequence_numbers_have_no_gaps_when_a_stream_skips_entries(tmp_path):
    data = [{"a": {"x": 1.0}, **({"b": {"y": i}} if i % 3 == 0 else {})} for i in range(10)]
    run = compose(data, {}, root=tmp_path)
    docs = _by_name(run)
    stream_of = {d["uid"]: d["name"] for d in docs["descriptor"]}
    seq = defaultdict(list)
    for event in docs["event"]:
        seq[stream_of[event["descriptor"]]].append(event["seq_num"])
    assert seq == {"a": list(range(1, 11)), "b": [1, 2, 3, 4]}
    assert [e["data"]["y"] for e in docs["event"] if stream_of[e["descriptor"]] == "b"] == [
        0,
        3,
        6,
        9,
    ]


def test_inputs_are_not_mutated(tmp_path):
    data = example_data_dicts(points=4)
    md = {"analysis": "t", "parameters": {"bins": [1, 2]}}
    writers = {"roi_image": "BAS_NPY"}
    before = pickle.dumps((data, md, writers))
    for asset_form in FORMS:
        root = tmp_path / asset_form
        root.mkdir()
        compose(data, md, root=root, writers=writers, asset_form=asset_form)
    assert pickle.dumps((data, md, writers)) == before


def test_inline_values_travel_in_the_events(tmp_path):
    data = [{"primary": {"n": i, "ok": i % 2 == 0, "v": np.arange(3) * i}} for i in range(3)]
    run = compose(data, {}, root=tmp_path)
    events = _by_name(run)["event"]
    assert [e["data"] for e in events] == [
        {"n": 0, "ok": True, "v": [0, 0, 0]},
        {"n": 1, "ok": False, "v": [0, 1, 2]},
        {"n": 2, "ok": True, "v": [0, 2, 4]},
    ]
    assert run.files == ()
    assert list(tmp_path.iterdir()) == []


def test_big_arrays_complex_values_and_dataframes_go_to_files_by_default(tmp_path):
    frame = pd.DataFrame({"q": [1.0, 2.0]})
    data = [{"s": {"big": np.zeros(17), "z": np.complex128(1j), "t": frame, "small": np.zeros(16)}}]
    run = compose(data, {}, root=tmp_path)
    resources = {d["data_key"]: d for d in _by_name(run)["stream_resource"]}
    assert resources["big"]["parameters"]["spec"] == "BAS_HDF5"
    assert resources["z"]["parameters"]["spec"] == "BAS_HDF5"
    assert resources["t"]["parameters"]["spec"] == "BAS_TABLE_HDF5"
    assert "small" not in resources


def test_dbep6_writers_dict_entry(tmp_path):
    calls = []

    def resource_func(docs, data_key, *, prefix):
        calls.append((docs["start"]["uid"], docs["stream_name"], data_key))
        return f"{prefix}/{data_key}-{docs['start']['uid'][:8]}.npy", {}

    other_root = tmp_path / "elsewhere"
    other_root.mkdir()
    writers = {
        "frame": {
            "writer": NPYWriter,
            "resource": {"func": resource_func, "kwargs": {"prefix": "npy"}},
            "root": str(other_root),
            "spec": "BAS_NPY",
        }
    }
    data = [{"primary": {"frame": np.full((3, 3), i, dtype="i2")}} for i in range(4)]
    run = compose(data, {}, root=tmp_path, writers=writers, asset_form="resource")
    (resource,) = _by_name(run)["resource"]
    assert calls == [(run.uid, "primary", "frame")]
    assert resource["spec"] == "BAS_NPY"
    assert resource["root"] == str(other_root.resolve())
    assert resource["resource_path"] == f"npy/frame-{run.uid[:8]}.npy"
    stack = np.load(other_root / resource["resource_path"])
    assert stack.shape == (4, 3, 3)
    assert stack.dtype == np.dtype("i2")
    assert [int(s[0, 0]) for s in stack] == [0, 1, 2, 3]


def test_uid_can_be_chosen_and_documents_replay_as_copies(tmp_path):
    run = compose([{"p": {"x": 1}}], {}, root=tmp_path, uid="my-uid-1")
    assert run.uid == "my-uid-1"
    first = list(run)
    first[0][1]["uid"] = "changed"
    assert next(iter(run))[1]["uid"] == "my-uid-1"
    assert len(run) == len(first) == 4


def test_event_pages_carry_the_same_events(tmp_path):
    from event_model import unpack_event_page

    data = example_data_dicts(points=5)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    plain = compose(data, {}, root=tmp_path / "a", asset_form="resource")
    paged = compose(data, {}, root=tmp_path / "b", asset_form="resource", event_pages=True)
    pages = _by_name(paged)["event_page"]
    assert "event" not in _by_name(paged)
    assert [len(page["seq_num"]) for page in pages] == [5, 1, 1]
    unpacked = [event for page in pages for event in unpack_event_page(page)]
    expected = _by_name(plain)["event"]
    assert [e["seq_num"] for e in unpacked] == [e["seq_num"] for e in expected]
    assert [e["data"].keys() for e in unpacked] == [e["data"].keys() for e in expected]
    assert [e["data"]["mu"] for e in unpacked[:5]] == [e["data"]["mu"] for e in expected[:5]]


def test_event_page_validation_checks_structure_and_sampled_rows():
    from jsonschema import ValidationError

    from bluesky_analysis_store.compose._compose import validate_document

    page = {
        "descriptor": "d",
        "uid": ["a", "b", "c", "d"],
        "time": [1.0, 2.0, 3.0, 4.0],
        "seq_num": [1, 2, 3, 4],
        "data": {"x": [1, 2, 3, 4]},
        "timestamps": {"x": [1.0, 2.0, 3.0, 4.0]},
        "filled": {},
    }
    validate_document("event_page", page)
    ragged = {**page, "data": {"x": [1, 2, 3]}}
    with pytest.raises(AnalysisInputError, match=r"columns differ in length: \[3, 4\]"):
        validate_document("event_page", ragged)
    bad_last = {**page, "seq_num": [1, 2, 3, "four"]}
    with pytest.raises(ValidationError):
        validate_document("event_page", bad_last)
