"""Composed runs read back bit-exact through a real tiled catalog and through event-model Filler."""

from importlib.metadata import entry_points

import numpy as np
import pandas as pd
import pytest
from event_model import Filler
from helpers import compose

from bluesky_analysis_store import (
    analysis_sink,
    records_to_dataframe,
    register_tiled_consolidators,
)


def _mixed_data(points=5, seed=1):
    rng = np.random.default_rng(seed)
    energy = pd.Index(np.linspace(7000.0, 7100.0, 30), name="energy")
    data = []
    for i in range(points):
        data.append(
            {
                "primary": {
                    "hdf5": rng.normal(size=(6, 5)).astype(">f4"),
                    "npy": rng.integers(-9, 9, size=(2, 3, 4), dtype="i2"),
                    "tiff": rng.integers(0, 65535, size=(8, 7), dtype="u2"),
                    "table": pd.DataFrame(
                        {"mu": rng.normal(size=30), "good": rng.random(30) > 0.5}, index=energy
                    ),
                    "flag": bool(i % 2),
                    "total": float(i) / 3,
                },
                **({"fit": {"center": float(i), "cplx": np.complex64(i + 1j)}} if i % 2 else {}),
            }
        )
    return data


WRITERS = {"hdf5": "BAS_HDF5", "npy": "BAS_NPY", "tiff": "BAS_TIFF", "table": "BAS_TABLE_HDF5"}
ARRAY_KEYS = ["hdf5", "npy", "tiff"]


def _assert_bit_exact(actual, expected):
    assert actual.dtype == expected.dtype
    assert actual.shape == expected.shape
    assert actual.tobytes() == expected.tobytes()


@pytest.mark.parametrize("asset_form", ["stream_resource", "resource"])
def test_tiled_writer_round_trip(tiled_catalog, asset_form):
    data = _mixed_data()
    runs = tiled_catalog.new_runs_container()
    run = compose(
        data,
        {"analysis": "rt"},
        root=tiled_catalog.new_root(),
        writers=WRITERS,
        asset_form=asset_form,
    )
    writer = analysis_sink(runs)
    for name, doc in run:
        writer(name, doc)

    node = runs[run.uid]
    assert node.metadata["start"]["analysis"] == "rt"
    assert node.metadata["stop"]["exit_status"] == "success"
    primary = node["primary"]
    for key in ARRAY_KEYS:
        # np.stack would turn '>f4' into native float32: keep the written dtype to compare
        expected = np.stack([d["primary"][key] for d in data]).astype(data[0]["primary"][key].dtype)
        _assert_bit_exact(primary[key].read(), expected)
        _assert_bit_exact(primary[key][2], expected[2])  # sliceable, not only whole reads
    tables = primary["table"].read()
    for i, entry in enumerate(data):
        pd.testing.assert_frame_equal(
            records_to_dataframe(tables[i], index="energy"),
            entry["primary"]["table"],
            check_exact=True,
        )
    events = primary.read()
    assert list(events["total"].values) == [d["primary"]["total"] for d in data]
    assert list(events["flag"].values) == [d["primary"]["flag"] for d in data]
    fit = node["fit"]
    assert fit["cplx"].read().tolist() == [np.complex64(1 + 1j), np.complex64(3 + 1j)]


SMALL_ARRAYS = {
    "f8": lambda i: np.array([0.1, 0.2, 0.3]) * i,
    "f4_2d": lambda i: np.arange(6, dtype="f4").reshape(2, 3) + i,
    "u1": lambda i: np.array([1, 255, i], dtype="u1"),
    "i8": lambda i: np.array([-(2**62), i], dtype="i8"),
    "b1": lambda i: np.array([True, i % 2 == 0]),
    "empty": lambda i: np.zeros((0,)),
}


@pytest.mark.parametrize("event_pages", [True, False])
def test_arrays_inside_the_events_read_back_as_arrays(tiled_catalog, event_pages):
    """Arrays small enough to stay inside the events come back as numeric arrays of their own
    dtype and shape: TiledWriter's default would keep them as list columns of the event table,
    which tiled's (dask-based) client reads back as strings such as '[0.1 0.2 0.3]'."""
    data = [{"primary": {k: make(i) for k, make in SMALL_ARRAYS.items()}} for i in range(4)]
    runs = tiled_catalog.new_runs_container()
    run = compose(data, {}, root=tiled_catalog.new_root(), event_pages=event_pages)
    writer = analysis_sink(runs)
    for name, doc in run:
        writer(name, doc)
    primary = runs[run.uid]["primary"]
    events = primary.read()
    for key, make in SMALL_ARRAYS.items():
        expected = np.stack([make(i) for i in range(4)])
        _assert_bit_exact(np.asarray(primary[key].read()), expected)
        _assert_bit_exact(events[key].values, expected)


def test_bare_tiled_writer_after_registering_consolidators(tiled_catalog):
    """A user with their own TiledWriter needs only our consolidators and spec_to_mimetype."""
    from bluesky_tiled_plugins.writing.tiled_writer import TiledWriter

    from bluesky_analysis_store import default_registry

    register_tiled_consolidators()
    register_tiled_consolidators()  # idempotent
    data = _mixed_data(points=3)
    runs = tiled_catalog.new_runs_container()
    run = compose(data, {}, root=tiled_catalog.new_root(), writers=WRITERS)
    writer = TiledWriter(runs, spec_to_mimetype=default_registry().spec_to_mimetype())
    for name, doc in run:
        writer(name, doc)
    _assert_bit_exact(
        runs[run.uid]["primary"]["tiff"].read(),
        np.stack([d["primary"]["tiff"] for d in data]),
    )


def test_filler_with_handlers_from_databroker_entry_points(tmp_path):
    handlers = {ep.name: ep.load() for ep in entry_points(group="databroker.handlers")}
    data = _mixed_data(points=4)
    run = compose(data, {}, root=tmp_path, writers=WRITERS, asset_form="resource")
    filled_events = []
    with Filler(handlers, inplace=False) as filler:
        for name, doc in run:
            name, doc = filler(name, doc)
            if name == "event" and "hdf5" in doc["data"]:
                filled_events.append(doc)
    assert len(filled_events) == 4
    for event, entry in zip(filled_events, data, strict=True):
        assert all(event["filled"].values())
        for key in ARRAY_KEYS:
            _assert_bit_exact(event["data"][key], entry["primary"][key])
        pd.testing.assert_frame_equal(
            event["data"]["table"], entry["primary"]["table"], check_exact=True
        )
        assert event["data"]["total"] == entry["primary"]["total"]
