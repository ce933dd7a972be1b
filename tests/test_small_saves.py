"""Small saves cost little: an HDF5 stack's chunk holds no more frames than the run has, and a
save makes no request that nobody needs (no stream closing where nobody listens)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd
import pytest
from helpers import compose, make_provenance
from tiled.client import record_history

from bluesky_analysis_store import AnalysisStore, default_registry

REGISTRY = default_registry()
KiB = 1 << 10


def _spectra(count: int) -> np.ndarray:
    return np.random.default_rng(0).random((count, 32), dtype=np.float32)


def _table(i: int) -> pd.DataFrame:
    return pd.DataFrame({"height": np.arange(32, dtype=np.float32) + i})


@pytest.mark.parametrize("spec", ["BAS_HDF5", "BAS_TABLE_HDF5"])
def test_a_small_run_makes_a_small_file(spec: str, tmp_path: Path) -> None:
    """10 frames of 32 float32 values: a few KB, not a 1 MiB chunk sized for 8192 frames."""
    spectra = _spectra(10)
    values = list(spectra) if spec == "BAS_HDF5" else [_table(i) for i in range(10)]
    run = compose(
        [{"primary": {"value": v}} for v in values], {}, root=tmp_path, writers={"value": spec}
    )
    (path,) = run.files
    assert os.path.getsize(path) < 64 * KiB
    with h5py.File(path, "r") as f:
        dataset = f["/data" if spec == "BAS_HDF5" else "/table"]
        assert dataset.shape[0] == 10
        assert dataset.chunks[0] == 10
    resource = next(doc for name, doc in run if name == "stream_resource")
    kwargs = {k: v for k, v in resource["parameters"].items() if k != "spec"}
    with REGISTRY[spec].handler(str(path), **kwargs) as handler:
        for i, value in enumerate(values):
            read = handler(point_number=i)
            if spec == "BAS_HDF5":
                np.testing.assert_array_equal(read, value)
            else:
                pd.testing.assert_frame_equal(read, value)


def test_a_large_run_keeps_chunks_of_the_target_size(tmp_path: Path) -> None:
    pair = REGISTRY["BAS_HDF5"]
    first = np.zeros(32, dtype=np.float32)
    kwargs = json.loads(json.dumps(pair.resource_kwargs(first, pair.describe(first))))
    per_chunk = kwargs["chunk_shape"][0]
    spectra = _spectra(2 * per_chunk + 5)  # two full chunks and a partial one
    path = str(tmp_path / "large.h5")
    with pair.writer(path, **kwargs) as writer:
        for spectrum in spectra:
            writer(spectrum)
    with h5py.File(path, "r") as f:
        dataset = f[kwargs["dataset"]]
        assert dataset.chunks == (per_chunk, 32)
        np.testing.assert_array_equal(dataset[()], spectra)
    # at most the unfilled part of the last chunk beyond the data, and some headers
    assert os.path.getsize(path) <= spectra.nbytes + per_chunk * first.nbytes + 64 * KiB
    with pair.handler(path, **kwargs) as handler:
        for i in (0, per_chunk - 1, per_chunk, len(spectra) - 1):
            np.testing.assert_array_equal(handler(point_number=i), spectra[i])


def _old_layout_file(path: Path, spectra: np.ndarray) -> None:
    """A file as the writer made it before: resizable, one chunk sized for 8192 frames."""
    with h5py.File(path, "w", libver="latest") as f:
        dataset = f.create_dataset(
            "/data", shape=(0, 32), maxshape=(None, 32), dtype="f4", chunks=(8192, 32)
        )
        dataset.resize(16384, axis=0)
        dataset[: len(spectra)] = spectra
        dataset.resize(len(spectra), axis=0)


@pytest.mark.parametrize("layout", ["new", "old"])
def test_handler_and_tiled_read_new_and_old_files(layout: str, tmp_path: Path) -> None:
    from tiled.adapters.hdf5 import HDF5ArrayAdapter

    pair = REGISTRY["BAS_HDF5"]
    spectra = _spectra(10)
    kwargs = pair.resource_kwargs(spectra[0], pair.describe(spectra[0]))
    path = tmp_path / "spectrum.h5"
    if layout == "old":
        _old_layout_file(path, spectra)
    else:
        with pair.writer(str(path), **kwargs) as writer:
            for spectrum in spectra:
                writer(spectrum)
    with pair.handler(str(path), **kwargs) as handler:
        for i, spectrum in enumerate(spectra):
            np.testing.assert_array_equal(handler(point_number=i), spectrum)
    adapter = HDF5ArrayAdapter.from_uris(path.as_uri(), dataset="/data")
    np.testing.assert_array_equal(adapter.read(), spectra)


def test_a_small_run_reads_back_through_the_store(tiled_catalog) -> None:
    root = tiled_catalog.new_root()
    store = AnalysisStore(tiled_catalog.new_runs_container(), root)
    spectra = _spectra(10)
    uid = store.save(
        [{"primary": {"spectrum": s, "total": float(s.sum())}} for s in spectra],
        {},
        provenance=make_provenance(),
        writers={"spectrum": "BAS_HDF5"},
    )
    np.testing.assert_array_equal(store[uid]["primary"]["spectrum"].read(), spectra)
    (path,) = root.rglob("*.h5")
    assert path.stat().st_size < 64 * KiB


# ---------------------------------------------------------------- requests of a small save


def _small_run(seed: int = 0) -> list[dict[str, Any]]:
    spectra = np.random.default_rng(seed).random((10, 32), dtype=np.float32)
    return [{"primary": {"spectrum": s, "total": float(s.sum())}} for s in spectra]


def _closes(history: Any) -> int:
    return sum("/stream/close/" in str(r.url.path) for r in history.requests)


def test_a_save_closes_no_streams_where_nobody_listens(tmp_path: Path) -> None:
    """The store's app keeps no streaming cache and no webhooks, so TiledWriter's four
    ``close_stream`` requests per run tell nobody anything: the store's sink skips them (and
    asks the app once). A bare TiledWriter on the same store still sends them; both runs read
    back the same."""
    from bluesky_tiled_plugins.writing.tiled_writer import TiledWriter

    with AnalysisStore.open(tmp_path / "store") as store:
        with record_history() as first:
            store.save(_small_run(0), {}, provenance=make_provenance(parameters={"n": 0}))
        with record_history() as second:
            uid = store.save(_small_run(1), {}, provenance=make_provenance(parameters={"n": 1}))
        assert _closes(first) == _closes(second) == 0
        asked = [r for r in first.requests if "/bas/streams/" in str(r.url.path)]
        assert len(asked) == 1
        assert not any("/bas/streams/" in str(r.url) for r in second.requests)
        # TiledWriter's 12 requests a run less its 4 closes; the lineage lookup reads the
        # embedded catalog's index in process, no request
        assert len(second.requests) == 8

        bare_root = store.root / "bare"
        bare_root.mkdir()
        run = compose(
            _small_run(1), {}, root=bare_root, provenance=make_provenance(parameters={"n": 2})
        )
        with record_history() as bare:
            writer = TiledWriter(store.runs)
            for name, doc in run:
                writer(name, doc)
        assert _closes(bare) == 4

        ours, theirs = store[uid], store[run.uid]
        assert ours.metadata["stop"]["exit_status"] == theirs.metadata["stop"]["exit_status"]
        assert sorted(ours["primary"]) == sorted(theirs["primary"])
        for key in ("spectrum", "total"):
            np.testing.assert_array_equal(
                ours["primary"][key].read(), theirs["primary"][key].read()
            )


def test_a_server_that_keeps_streams_gets_them_closed(tmp_path: Path) -> None:
    """A catalog with a streaming cache (live subscribers may wait for the end of a stream):
    the app says so, and the sink closes every node's stream as TiledWriter does."""
    from tiled.client import Context, from_context

    from bluesky_analysis_store.store._app import build_store_app
    from bluesky_analysis_store.store._catalog import embedded_tree, runs_container
    from bluesky_analysis_store.store._streams_route import server_streams

    tree = embedded_tree(tmp_path)
    tree.context.cache_config = {"uri": "memory"}  # tiled's in-memory streaming cache
    with Context.from_app(build_store_app(tree, one_request_at_a_time=True)) as context:
        runs = runs_container(from_context(context))
        assert server_streams(runs) is True
        store = AnalysisStore(runs, tmp_path / "files")
        with record_history() as history:
            uid = store.save(_small_run(), {}, provenance=make_provenance())
        assert _closes(history) == 4
        assert store[uid].metadata["stop"]["exit_status"] == "success"


def test_a_server_without_the_route_gets_streams_closed(tmp_path: Path) -> None:
    """tiled's own app (not the store's: no route to ask) is taken to keep streams."""
    from tiled.client import Context, from_context
    from tiled.server.app import build_app

    from bluesky_analysis_store.store._catalog import embedded_tree, runs_container
    from bluesky_analysis_store.store._streams_route import server_streams

    with Context.from_app(build_app(embedded_tree(tmp_path))) as context:
        runs = runs_container(from_context(context))
        assert server_streams(runs) is True
        store = AnalysisStore(runs, tmp_path / "files")
        with record_history() as history:
            store.save(_small_run(), {}, provenance=make_provenance())
        assert _closes(history) == 4


# ---------------------------------------------------------------- a run's scalar table


def _scalars(count: int) -> list[dict[str, Any]]:
    return [
        {
            "primary": {
                "total": 0.5 * i,
                "count": i,
                "ok": i % 2 == 0,
                "spectrum": np.full(4, i, dtype=np.float32),
            }
        }
        for i in range(count)
    ]


def test_a_runs_scalar_table_is_read_in_one_request(tmp_path: Path) -> None:
    """Every scalar column of a stream, exact dtypes, in one request (``run[stream].read()``
    takes more, a column alone more each); arrays stay out of it."""
    data = _scalars(10)
    with AnalysisStore.open(tmp_path / "store") as store:
        uid = store.save(data, {}, provenance=make_provenance())
        with record_history() as history:
            table = store.scalar_table(uid)
        assert len(history.requests) == 1
        assert list(table.columns) == ["seq_num", "time", "total", "count", "ok"]
        assert [str(t) for t in table.dtypes[2:]] == ["float64", "int64", "bool"]
        for key in ("total", "count", "ok"):
            assert table[key].tolist() == [d["primary"][key] for d in data]
        assert table["seq_num"].tolist() == list(range(1, 11))

        with record_history() as history:
            dataset = store[uid]["primary"].read()
        assert len(history.requests) > 1  # what the one request replaces
        for key in ("total", "count", "ok"):
            np.testing.assert_array_equal(dataset[key].values, table[key].to_numpy())

        stamped = store.scalar_table(uid[:8], "primary", timestamps=True)  # a partial uid
        assert {"ts_total", "ts_count", "ts_ok"} <= set(stamped.columns)
        with pytest.raises(KeyError, match="no stream 'nope'"):
            store.scalar_table(uid, "nope")


def test_a_scalar_table_split_in_parts_is_read_whole(tmp_path: Path) -> None:
    """More than 1,024 columns: TiledWriter writes ``internal_0``, ``internal_1``, ...; they
    are read through tiled's client and put side by side."""
    keys = [f"k{i}" for i in range(1100)]
    data = [{"wide": {key: float(i + n) for n, key in enumerate(keys)}} for i in range(2)]
    with AnalysisStore.open(tmp_path / "store") as store:
        uid = store.save(data, {}, provenance=make_provenance())
        assert "internal" not in store[uid]["wide"].base
        table = store.scalar_table(uid, "wide")
    assert sorted(c for c in table.columns if c.startswith("k")) == sorted(keys)
    assert list(table.columns[:2]) == ["seq_num", "time"]
    assert table["k1099"].tolist() == [1099.0, 1100.0]
