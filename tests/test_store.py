"""AnalysisStore on a real tiled catalog (SQLite): save, read back, find."""

import uuid

import numpy as np
import pandas as pd
import pytest
from helpers import PARENT_UID, make_provenance, raw_run

from bluesky_analysis_store import (
    AnalysisName,
    AnalysisStore,
    DerivedFrom,
    MetadataPacket,
    ProvenanceError,
)


@pytest.fixture
def store(any_catalog):
    return AnalysisStore(any_catalog.new_runs_container(), any_catalog.new_root())


def _save(store, parents=(PARENT_UID,), name="reduce_spectrum", **kwargs):
    data = [{"primary": {"image": np.full((6, 4), i, "f4"), "x": float(i)}} for i in range(5)]
    provenance = make_provenance(parents=list(parents), name=name, parameters=kwargs)
    return store.save(data, {}, writers={"image": "BAS_HDF5"}, provenance=provenance)


def test_save_and_read_back_sliceable(store):
    uid = _save(store)
    run = store[uid]
    assert run.metadata["start"]["parent_uids"] == [PARENT_UID]
    assert run.metadata["stop"]["exit_status"] == "success"
    image = run["primary"]["image"]
    assert image.shape == (5, 6, 4)
    np.testing.assert_array_equal(image[3], np.full((6, 4), 3, "f4"))
    np.testing.assert_array_equal(image[1:3, 0, 0], [1, 2])
    assert store[uid[:8]].metadata["start"]["uid"] == uid  # partial uid
    assert store[-1].metadata["start"]["uid"] == uid
    assert uid in store
    assert "abc" not in store  # too short for a partial uid: not found, not an error
    assert str(uuid.uuid4()) not in store
    assert len(store) == 1


def test_tables_read_back_through_the_store(store):
    frame = pd.DataFrame({"mu": np.linspace(0, 1, 7)}, index=pd.Index(np.arange(7.0), name="e"))
    uid = store.save([{"spectra": {"mu": frame}}], {}, provenance=make_provenance(), writers=None)
    records = store[uid]["spectra"]["mu"].read()[0]
    np.testing.assert_array_equal(records["mu"], frame["mu"].to_numpy())


def test_derived_from_one_level_and_recursive(store):
    first = _save(store, step=1)
    second = _save(store, parents=[store[first]], step=2)
    third = _save(store, parents=[store[second]], step=3)
    sibling = _save(store, step=4)
    _save(store, parents=["11111111-2222-4333-8444-555555555555"], step=5)  # unrelated
    assert sorted(store.derived_from(PARENT_UID)) == sorted([first, sibling])
    assert sorted(store.derived_from(PARENT_UID, recursive=True)) == sorted(
        [first, sibling, second, third]
    )
    assert store.derived_from(second) == [third]
    assert store.derived_from(third) == []


def test_queries_by_lineage_sample_and_analysis(store):
    packet = MetadataPacket()
    sample = packet.set_sample("Cu foil")["sample_uuid"]
    provenance = make_provenance(name="fit", version="2.0", parameters={"k": 1})
    uid = store.save([{"p": {"x": 1.0}}], {}, provenance=provenance, packet=packet)
    other = _save(store, name="fit", k=2)
    assert store.with_lineage(provenance.lineage_hash()) == [uid]
    assert store.of_sample(sample) == [uid]
    assert sorted(store.by_analysis("fit")) == sorted([uid, other])
    assert store.by_analysis("fit", "2.0") == [uid]
    # our queries combine with tiled's own
    from tiled.queries import Key

    combined = store.search(DerivedFrom(PARENT_UID), AnalysisName("fit"), Key("k") == 1)
    assert list(combined) == []  # 'k' lives in provenance.parameters, not at the top level
    assert list(store.search(DerivedFrom(PARENT_UID), AnalysisName("fit"))) == [uid, other]


def test_bluesky_queries_work_unchanged(store):
    from bluesky_tiled_plugins.queries import PartialUID, ScanID, TimeRange

    uid = _save(store)
    numbered = store.save(
        [{"p": {"x": 1.0}}], {"scan_id": 7}, provenance=make_provenance(parameters={"scan": 7})
    )
    assert list(store.search(ScanID(7))) == [numbered]
    assert store[7].metadata["start"]["uid"] == numbered  # catalog[scan_id]
    assert store[-1].metadata["start"]["uid"] == numbered
    assert list(store.search(PartialUID(uid[:10]))) == [uid]
    assert list(store.search(TimeRange(since="2000-01-01"))) == [uid, numbered]
    assert list(store.search(TimeRange(until="2000-01-01"))) == []


def test_save_refuses_bad_provenance_and_writes_nothing(store):
    before = sorted(store.root.rglob("*"))
    with pytest.raises(ProvenanceError, match="provenance is required"):
        store.save([{"p": {"image": np.zeros(100)}}], {}, provenance=None)
    assert sorted(store.root.rglob("*")) == before
    assert len(store) == 0


def test_embedded_store_is_created_then_reopened_with_everything_there(tmp_path):
    directory = tmp_path / "store"
    with AnalysisStore.open(directory) as store:
        uid = _save(store)
        assert store.root == directory / "files"
    assert (directory / "catalog.db").is_file()
    with AnalysisStore.open(directory) as store:
        assert list(store) == [uid]
        np.testing.assert_array_equal(store[uid]["primary"]["image"][4], np.full((6, 4), 4))


def test_lineage_across_raw_and_analysis_catalogs(any_catalog, tmp_path):
    raw = any_catalog.new_runs_container()
    store = AnalysisStore(any_catalog.new_runs_container(), any_catalog.new_root(), raw=raw)
    raw_uid = raw_run(raw)
    first = _save(store, parents=[raw[raw_uid]], name="fit_peak", step=1)
    second = _save(store, parents=[store[first]], name="compare", step=2)
    orphan = "99999999-8888-4777-8666-555555555555"
    third = _save(store, parents=[store[second], orphan], name="report", step=3)

    graph = store.lineage(first[:10])
    assert graph.focus == first
    assert graph.ancestors() == [raw_uid]
    assert graph.descendants() == [second, third]
    assert graph.nodes[raw_uid].kind == "raw"
    assert graph.nodes[raw_uid].label == "count"
    text = graph.as_text().splitlines()
    assert text[0] == f"{first[:8]}  fit_peak 1.0  [analysis]"
    assert f"  └── {raw_uid[:8]}  count  [raw]" in text
    assert f"  └── {second[:8]}  compare 1.0  [analysis]" in text
    assert f"      └── {third[:8]}  report 1.0  [analysis]" in text

    whole = store.lineage(third)
    assert set(whole.ancestors()) == {second, first, raw_uid, orphan}
    assert whole.nodes[orphan].kind == "missing"
    picture = whole.write_svg(tmp_path / "lineage.svg")
    from xml.etree import ElementTree

    svg = ElementTree.parse(picture).getroot()
    titles = [t.text for t in svg.iter("{http://www.w3.org/2000/svg}title")]
    assert sorted(titles) == sorted([raw_uid, first, second, third, orphan])
    assert len(svg.findall("{http://www.w3.org/2000/svg}line")) == 4


def test_insert_subscribed_to_a_run_engine(tiled_catalog):
    """store.insert takes a live document stream: RE.subscribe(store.insert)."""
    from bluesky import RunEngine
    from bluesky.plans import count
    from ophyd.sim import det

    from bluesky_analysis_store import ProvenancePolicy
    from bluesky_analysis_store.provenance._start_metadata import provenance_metadata

    store = AnalysisStore(tiled_catalog.new_runs_container(), tiled_catalog.new_root())
    engine = RunEngine({})
    engine.subscribe(store.insert)
    md = provenance_metadata(make_provenance(name="live"), ProvenancePolicy())
    (uid,) = engine(count([det], num=3), **md)
    assert store.derived_from(PARENT_UID) == [uid]
    assert store[uid]["primary"]["det"].read().shape == (3,)
    assert store.by_analysis("live") == [uid]


def test_an_unknown_save_option_is_named_and_nothing_is_written(store):
    from bluesky_analysis_store import InputTypeError

    data = [{"primary": {"image": np.zeros((6, 4), "f4")}}]
    with pytest.raises(InputTypeError, match=r"'writer'.*accepted: asset_form, event_pages"):
        store.save(data, {}, provenance=make_provenance(), writer={"image": "BAS_HDF5"})
    assert len(store) == 0
    assert [p for p in store.root.rglob("*") if p.is_file() and p.name != ".bas-lock"] == []
