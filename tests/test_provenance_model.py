"""The provenance model, its committed JSON Schema, and where provenance lands in a run."""

import json

import h5py
import jsonschema
import numpy as np
import pytest
from helpers import PARENT_UID, compose, make_provenance

from bluesky_analysis_store import Provenance
from bluesky_analysis_store.provenance._provenance import SCHEMA_PATH, provenance_json_schema


def test_committed_schema_matches_the_model():
    """Drift test: regenerate with `python -m bluesky_analysis_store.provenance._provenance`."""
    committed = json.loads(SCHEMA_PATH.read_text())
    assert committed == provenance_json_schema(), (
        "schemas/provenance.json is stale; run "
        "`python -m bluesky_analysis_store.provenance._provenance`"
    )


def test_captured_provenance_validates_against_the_committed_schema(tmp_path):
    raw = tmp_path / "raw.dat"
    raw.write_bytes(b"\x00\x01" * 100)
    provenance = make_provenance(inputs=[raw], parameters={"bins": 10, "roi": [1, 2]})
    document = provenance.model_dump(mode="json")
    jsonschema.validate(document, json.loads(SCHEMA_PATH.read_text()))
    assert Provenance.model_validate(document) == provenance
    document["code"]["unexpected"] = 1  # extra="forbid" must survive into the schema
    with pytest.raises(jsonschema.ValidationError, match="'unexpected' was unexpected"):
        jsonschema.validate(document, json.loads(SCHEMA_PATH.read_text()))


def test_start_document_carries_provenance_and_query_keys(tmp_path):
    provenance = make_provenance(parameters={"threshold": 0.5})
    run = compose([{"primary": {"x": 1.0}}], {"note": "n"}, root=tmp_path, provenance=provenance)
    start = run.documents[0][1]
    assert start["provenance"] == provenance.model_dump(mode="json")
    assert start["analysis_name"] == "reduce_spectrum"
    assert start["analysis_version"] == "1.0"
    assert start["parent_uids"] == [PARENT_UID]
    assert start["lineage_hash"] == provenance.lineage_hash()
    assert start["provenance_policy"]["require_version"] is True
    assert start["provenance_policy"]["relaxed_because"] is None
    assert start["note"] == "n"


def test_hdf5_files_describe_themselves(tmp_path):
    provenance = make_provenance()
    data = [{"primary": {"image": np.zeros((8, 8)), "table_free": 1.0}}]
    run = compose(data, {}, root=tmp_path, writers={"image": "BAS_HDF5"}, provenance=provenance)
    (path,) = run.files
    with h5py.File(path, "r") as f:
        assert f.attrs["bluesky_analysis_store.run_uid"] == run.uid
        recorded = json.loads(f.attrs["bluesky_analysis_store.provenance"])
    assert Provenance.model_validate(recorded) == provenance


def test_npy_and_tiff_files_carry_no_attributes_but_still_compose(tmp_path):
    data = [{"primary": {"a": np.zeros((4, 4), "u2"), "b": np.zeros((4, 4), "u2")}}]
    run = compose(data, {}, root=tmp_path, writers={"a": "BAS_NPY", "b": "BAS_TIFF"})
    assert sorted(p.suffix for p in run.files) == [".npy", ".tiff"]


def test_a_tiled_run_can_be_a_parent(tiled_catalog):
    """describe_parent reads uid and lineage hash from a run client (not only a start doc)."""
    from bluesky_analysis_store import analysis_sink, describe_parent

    runs = tiled_catalog.new_runs_container()
    first = compose([{"primary": {"x": 1.0}}], {}, root=tiled_catalog.new_root())
    writer = analysis_sink(runs)
    for name, doc in first:
        writer(name, doc)
    parent = describe_parent(runs[first.uid], catalog="analysis")
    assert parent.uid == first.uid
    assert parent.lineage_hash == first.documents[0][1]["lineage_hash"]
    second = compose(
        [{"primary": {"x": 2.0}}], {}, provenance=make_provenance(parents=[runs[first.uid]])
    )
    assert second.documents[0][1]["parent_uids"] == [first.uid]


def test_class_with_a_name_property_is_named_after_the_class():
    from bluesky_analysis_store import capture_code

    class Reducer:
        version = "2.1"

        @property
        def name(self):
            return "instance-name"

    assert capture_code(Reducer).name == "Reducer"
    assert capture_code(Reducer()).name == "instance-name"
    assert capture_code(Reducer).version == "2.1"
