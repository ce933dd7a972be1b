"""Small saves cost little: an HDF5 stack's chunk holds no more frames than the run has."""

from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
from helpers import compose, make_provenance

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
