"""The document gate's rule (docs/explanation/decisions/0001-the-document-gate.rst): valid
streams that a bare TiledWriter stores and reads back correctly are accepted; what it would
store wrong is refused with a typed error. Each stream goes through ``store.insert`` into a real
in-process tiled catalog and is read back with tiled's client."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import event_model
import h5py
import numpy as np
import pytest
from helpers import insert_all, make_provenance

from bluesky_analysis_store import (
    AnalysisStore,
    ProvenanceError,
    analysis_sink,
)
from bluesky_analysis_store.provenance._policy import ProvenancePolicy, enforce_provenance
from bluesky_analysis_store.provenance._start_metadata import start_metadata


@pytest.fixture
def store(tiled_catalog: Any) -> AnalysisStore:
    return AnalysisStore(tiled_catalog.new_runs_container(), tiled_catalog.new_root())


def _bundle(**md: Any) -> Any:
    """event-model's own composer, with a start that records valid provenance."""
    policy = ProvenancePolicy()
    provenance = enforce_provenance(make_provenance(parameters={"case": uuid.uuid4().hex}), policy)
    return event_model.compose_run(metadata=start_metadata(md, provenance, policy))


def _hdf5(path: Path, data: np.ndarray, dataset: str = "/data") -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as file:
        file[dataset] = data
    return f"file://localhost{path}"


def _insert(store: AnalysisStore, docs: list[tuple[str, Any]]) -> str:
    for name, doc in docs:
        store.insert(name, doc)
    return docs[0][1]["uid"]


def test_a_stream_of_stream_datums_only_from_compose_run_is_accepted(store: AnalysisStore):
    """event-model counts events only: its stop says num_events {primary: 0}."""
    frames = np.arange(5 * 3 * 4, dtype="<f8").reshape(5, 3, 4)
    bundle = _bundle()
    descriptor = bundle.compose_descriptor(
        name="primary",
        data_keys={
            "img": {
                "dtype": "array",
                "shape": [3, 4],
                "dtype_numpy": "<f8",
                "source": "file",
                "external": "STREAM:",
            }
        },
    )
    uri = _hdf5(store.root / str(uuid.uuid4()) / "img.h5", frames)
    resource = bundle.compose_stream_resource(
        mimetype="application/x-hdf5", uri=uri, data_key="img", parameters={"dataset": "/data"}
    )
    datum = resource.compose_stream_datum(
        indices=event_model.StreamRange(start=0, stop=5), descriptor=descriptor.descriptor_doc
    )
    stop = bundle.compose_stop()
    assert stop["num_events"] == {"primary": 0}
    uid = _insert(
        store,
        [
            ("start", bundle.start_doc),
            ("descriptor", descriptor.descriptor_doc),
            ("stream_resource", resource.stream_resource_doc),
            ("stream_datum", datum),
            ("stop", stop),
        ],
    )
    run = store[uid]
    assert run.metadata["stop"]["exit_status"] == "success"
    np.testing.assert_array_equal(run["primary"]["img"].read(), frames)


def _legacy_run(store: AnalysisStore, *, run_start: bool, dataset_in: str, paged: bool):
    """A legacy Resource/Datum run as older ophyd devices send it."""
    frames = np.arange(3 * 2 * 2, dtype="<i4").reshape(3, 2, 2)
    bundle = _bundle()
    directory = store.root / str(uuid.uuid4())
    _hdf5(directory / "det.h5", frames, "/entry/frames")
    kwargs = {"dataset": "/entry/frames"}
    resource = bundle.compose_resource(
        spec="PANDA",  # HDF5 in TiledWriter's MIMETYPE_LOOKUP, without a default dataset
        root=str(store.root),
        resource_path=f"{directory.name}/det.h5",
        resource_kwargs=kwargs if dataset_in == "resource" else {},
    )
    resource_doc = dict(resource.resource_doc)
    if not run_start:
        del resource_doc["run_start"]
    datum_kwargs = [
        {"point_number": i, **(kwargs if dataset_in == "datum" else {})} for i in range(3)
    ]
    datums = [resource.compose_datum(datum_kwargs=k) for k in datum_kwargs]
    descriptor = bundle.compose_descriptor(
        name="primary",
        data_keys={
            "det": {
                "dtype": "array",
                "shape": [2, 2],
                "dtype_numpy": "<i4",
                "source": "file",
                "external": "FILESTORE:",
            },
            "x": {"dtype": "number", "shape": [], "source": "sim"},
        },
    )
    docs: list[tuple[str, Any]] = [("start", bundle.start_doc), ("resource", resource_doc)]
    if paged:
        docs.append(("datum_page", event_model.pack_datum_page(*datums)))
    else:
        docs += [("datum", d) for d in datums]
    docs.append(("descriptor", descriptor.descriptor_doc))
    for i, datum in enumerate(datums):
        event = descriptor.compose_event(
            data={"det": datum["datum_id"], "x": float(i)},
            timestamps={"det": 1.0, "x": 1.0},
            filled={"det": False},
        )
        docs.append(("event", event))
    docs.append(("stop", bundle.compose_stop()))
    return docs, frames


@pytest.mark.parametrize(
    ("run_start", "dataset_in", "paged"),
    [(False, "resource", False), (True, "datum", False), (True, "resource", True)],
    ids=["resource-without-run_start", "dataset-in-datum_kwargs", "datum_page"],
)
def test_legacy_resources_are_accepted(
    tiled_catalog: Any, run_start: bool, dataset_in: str, paged: bool
) -> None:
    store = AnalysisStore(tiled_catalog.new_runs_container(), tiled_catalog.new_root())
    docs, frames = _legacy_run(store, run_start=run_start, dataset_in=dataset_in, paged=paged)
    uid = _insert(store, docs)
    run = store[uid]
    assert run.metadata["stop"]["exit_status"] == "success"
    det = run["primary"]["det"].read()
    np.testing.assert_array_equal(det, frames)
    assert det.dtype == np.dtype("<i4")


def test_a_plain_tiled_writer_meeting_our_mimetypes_first_breaks_nothing(
    tiled_catalog: Any,
) -> None:
    """CONSOLIDATOR_REGISTRY is a defaultdict: a plain TiledWriter's lookup fills in
    ConsolidatorBase for image/tiff and application/x-npy."""
    from bluesky_tiled_plugins.writing.consolidators import (
        CONSOLIDATOR_REGISTRY,
        ConsolidatorBase,
    )

    saved = dict(CONSOLIDATOR_REGISTRY)
    try:
        for mimetype in ("image/tiff", "application/x-npy"):
            CONSOLIDATOR_REGISTRY.pop(mimetype, None)
            assert CONSOLIDATOR_REGISTRY[mimetype] is ConsolidatorBase  # what a lookup does
        writer = analysis_sink(tiled_catalog.new_runs_container())
        assert CONSOLIDATOR_REGISTRY["image/tiff"].__name__ == "SingleFileConsolidator"
        assert writer is not None
        store = AnalysisStore(tiled_catalog.new_runs_container(), tiled_catalog.new_root())
        uid = store.save(
            [{"primary": {"img": np.full((4, 4), i, "u2")}} for i in range(3)],
            {},
            provenance=make_provenance(parameters={"case": uuid.uuid4().hex}),
            writers={"img": "BAS_TIFF"},
        )
        np.testing.assert_array_equal(store[uid]["primary"]["img"][2], np.full((4, 4), 2))
    finally:
        CONSOLIDATOR_REGISTRY.clear()
        CONSOLIDATOR_REGISTRY.update(saved)


def _array_run(values: list[Any], **spec: Any) -> list[tuple[str, Any]]:
    bundle = _bundle()
    descriptor = bundle.compose_descriptor(
        name="primary",
        data_keys={"a": {"dtype": "array", "source": "sim", **spec}},
    )
    docs: list[tuple[str, Any]] = [
        ("start", bundle.start_doc),
        ("descriptor", descriptor.descriptor_doc),
    ]
    for value in values:
        event = descriptor.compose_event(data={"a": value}, timestamps={"a": 1.0})
        docs.append(("event", event))
    docs.append(("stop", bundle.compose_stop()))
    return docs


@pytest.mark.parametrize(
    ("values", "spec", "message"),
    [
        ([[1.0, 2.0, 3.0], [1.0, 2.0]], {"shape": [3], "dtype_numpy": "<f8"}, "has shape [2]"),
        ([[1, 2, 3]], {"shape": [3]}, "declares no dtype_numpy"),
        ([[1.5, 2.0, 3.0]], {"shape": [3], "dtype_numpy": "<i8"}, "would truncate"),
        ([[[1.0], [2.0, 3.0]]], {"shape": [2, 2], "dtype_numpy": "<f8"}, "ragged"),
    ],
    ids=["shorter-than-declared", "integers-without-dtype", "floats-as-integers", "ragged"],
)
def test_event_arrays_that_would_be_stored_changed_are_refused(
    store: AnalysisStore, values: list[Any], spec: dict[str, Any], message: str
) -> None:
    docs = _array_run(values, **spec)
    refused = insert_all(store, docs)
    assert refused[0][0] == "event"
    assert message in refused[0][1]
    assert "data['a']" in refused[0][1]
    assert refused[-1][0] == "stop"  # it never looks complete
    assert not store[docs[0][1]["uid"]].metadata.get("stop")


def test_integer_arrays_inside_events_read_back_exact(store: AnalysisStore) -> None:
    docs = _array_run([[1, 2, 3], [4, 5, 6]], shape=[3], dtype_numpy="<i8")
    uid = _insert(store, docs)
    array = store[uid]["primary"]["a"].read()
    assert array.dtype == np.dtype("<i8")
    np.testing.assert_array_equal(array, [[1, 2, 3], [4, 5, 6]])


def test_a_raw_run_is_refused_by_store_insert_with_a_pointer_to_a_raw_catalog(
    store: AnalysisStore,
) -> None:
    bundle = event_model.compose_run(metadata={"plan_name": "scan"})
    with pytest.raises(ProvenanceError, match=r"raw_runs_only\(TiledWriter"):
        store.insert("start", bundle.start_doc)
    assert bundle.start_doc["uid"] not in store
    forged = dict(bundle.start_doc, provenance={"code": "me"}, parent_uids=["x"])
    with pytest.raises(ProvenanceError, match="provenance"):
        store.insert("start", forged)


def test_a_spool_that_cannot_write_does_not_stop_inserting(
    tiled_catalog: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A full disk or a spool without permissions: logged loudly, the run goes in directly."""
    spool = tmp_path / "spool"
    spool.write_text("a file where the spool's directory should be")  # mkdir fails: ENOTDIR
    store = AnalysisStore(tiled_catalog.new_runs_container(), tiled_catalog.new_root(), spool=spool)
    uid = store.save(
        [{"primary": {"x": float(i)}} for i in range(3)],
        {},
        provenance=make_provenance(parameters={"case": uuid.uuid4().hex}),
    )
    assert store[uid].metadata["stop"]["exit_status"] == "success"
    assert "cannot be written" in caplog.text
