"""Bad input: a clear error naming the entry, stream and key, and nothing written."""

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import compose

from bluesky_analysis_store import (
    AnalysisInputError,
    UnknownSpecError,
    UnsafePathError,
)


def _tree(root: Path) -> dict[str, bytes]:
    """Every path under root, with file contents, to compare before and after."""
    return {
        str(p.relative_to(root)): (p.read_bytes() if p.is_file() else b"<dir>")
        for p in sorted(root.rglob("*"))
    }


@pytest.fixture
def root(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (root / "existing.txt").write_text("keep me")
    return root


def _good(i=0):
    return {"primary": {"image": np.zeros((4, 4), "f4") + i, "x": float(i)}}


def _relative(docs, data_key, *, path):
    return path, {}


BAD_CASES = {
    "shape changes within a key": (
        [_good(0), {"primary": {"image": np.zeros((5, 4), "f4"), "x": 1.0}}],
        {},
        {"writers": {"image": "BAS_HDF5"}},
        AnalysisInputError,
        r"data_dicts\[1\]\['primary'\]\['image'\] has dtype <f4 and shape \(5, 4\) but "
        r"data_dicts\[0\]\['primary'\]\['image'\] has dtype <f4 and shape \(4, 4\)",
    ),
    "dtype changes within a key": (
        [_good(0), {"primary": {"image": np.zeros((4, 4), "f8"), "x": 1.0}}],
        {},
        {},
        AnalysisInputError,
        r"data_dicts\[1\]\['primary'\]\['image'\] has dtype <f8",
    ),
    "value that cannot be serialized": (
        [_good(0), {"primary": {"image": np.zeros((4, 4), "f4"), "x": object()}}],
        {},
        {},
        AnalysisInputError,
        r"data_dicts\[1\]\['primary'\]\['x'\]: a value of type object cannot be stored",
    ),
    "NaN inline": (
        [{"primary": {"x": float("nan")}}],
        {},
        {},
        AnalysisInputError,
        r"data_dicts\[0\]\['primary'\]\['x'\]: nan is not finite",
    ),
    "key containing a dot": (
        [{"primary": {"a.b": 1.0}}],
        {},
        {},
        AnalysisInputError,
        r"data_dicts\[0\]\['primary'\]: data key 'a.b' is not accepted; use 1-128 characters",
    ),
    "integer beyond 64 bits": (  # found by `make fuzz`: event-model refused dtype '|O'
        [{"primary": {"x": -(2**63) - 1}}],
        {},
        {},
        AnalysisInputError,
        r"data_dicts\[0\]\['primary'\]\['x'\]: -9223372036854775809 does not fit a 64-bit "
        "signed integer",
    ),
    "uint64 array beyond the signed range": (  # tiled failed at the stop, after the files
        [{"primary": {"x": np.array([2**64 - 1, 1], dtype="u8")}}],
        {},
        {},
        AnalysisInputError,
        r"\['x'\]: array holds 18446744073709551615, which does not fit a 64-bit signed integer",
    ),
    "key that is no string, in a later entry": (  # found by `make fuzz`: a TypeError before
        [{"primary": {"x": 0.0}}, {"primary": {"x": 1.0, 3: "y"}}],
        {},
        {"writers": {"image": "BAS_HDF5"}},
        AnalysisInputError,
        r"data_dicts\[1\]\['primary'\]: data key 3 is not accepted; use 1-128 characters",
    ),
    "key containing a slash": (
        [{"primary": {"a/b": np.zeros(100)}}],
        {},
        {},
        AnalysisInputError,
        r"data key 'a/b' is not accepted",
    ),
    "stream name containing a slash": (
        [{"../up": {"x": np.zeros(100)}}],
        {},
        {},
        AnalysisInputError,
        r"data_dicts\[0\]: stream name '../up' is not accepted",
    ),
    "unknown spec name": (
        [_good(0)],
        {},
        {"writers": {"image": "NO_SUCH_SPEC"}},
        UnknownSpecError,
        r"unknown spec 'NO_SUCH_SPEC'; registered specs: \[.*'BAS_HDF5'",
    ),
    "writers names a missing key": (
        [_good(0)],
        {},
        {"writers": {"imgae": "BAS_HDF5"}},
        AnalysisInputError,
        r"writers names keys \['imgae'\] that no stream holds; data keys: \['image', 'x'\]",
    ),
    "DBEP 6 entry without a writer class": (
        [_good(0)],
        {},
        {"writers": {"image": {"writer": None, "spec": "BAS_NPY"}}},
        AnalysisInputError,
        r"writers\['image'\]: 'spec' must be a string and 'writer' a writer class",
    ),
    "metadata that is not JSON-serializable": (
        [_good(0)],
        {"when": object()},
        {},
        AnalysisInputError,
        r"md\['when'\] = <object object at .*> is not JSON-serializable",
    ),
    "NaN in metadata": (
        [_good(0)],
        {"threshold": float("inf")},
        {},
        AnalysisInputError,
        r"md\['threshold'\] = inf is not JSON-serializable",
    ),
    "metadata sets the uid": (
        [_good(0)],
        {"uid": "abc"},
        {},
        AnalysisInputError,
        r"md sets \['uid'\], which compose_analysis_run sets itself",
    ),
    "missing key in one entry": (
        [_good(0), {"primary": {"x": 1.0}}],
        {},
        {},
        AnalysisInputError,
        r"data_dicts\[1\]\['primary'\] has keys \['x'\] but data_dicts\[0\]\['primary'\] has "
        r"\['image', 'x'\] \(missing \['image'\], extra \[\]\)",
    ),
    "reserved key": (
        [{"primary": {"time": 1.0}}],
        {},
        {},
        AnalysisInputError,
        r"data key 'time' is reserved",
    ),
    "TIFF given a 1-D array": (
        [{"primary": {"line": np.zeros(100)}}],
        {},
        {"writers": {"line": "BAS_TIFF"}},
        AnalysisInputError,
        r"data_dicts\[0\]\['primary'\]\['line'\]: TIFF pages hold non-empty 2-D frames",
    ),
    "table with a string column": (
        [{"primary": {"t": pd.DataFrame({"name": ["a", "b"]})}}],
        {},
        {},
        AnalysisInputError,
        r"data_dicts\[0\]\['primary'\]\['t'\]: column 'name' has dtype object",
    ),
    "table whose row count changes": (
        [
            {"primary": {"t": pd.DataFrame({"v": [1.0, 2.0]})}},
            {"primary": {"t": pd.DataFrame({"v": [1.0]})}},
        ],
        {},
        {},
        AnalysisInputError,
        r"data_dicts\[1\]\['primary'\]\['t'\] has dtype .* and shape \(1,\)",
    ),
    "empty data_dicts": ([], {}, {}, AnalysisInputError, "data_dicts holds no data"),
    "key in a file in one stream and in the events of another": (
        [{"fit": {"curve": np.zeros(30)}, "primary": {"curve": 1.0}}],
        {},
        {},
        AnalysisInputError,
        r"data key 'curve' is written to a file in stream 'fit' but travels inside the events "
        r"of stream 'primary'; a run keeps one kind per key name",
    ),
    "md key that is not a string": (
        [_good(0)],
        {"run": {"settings": {3: "three"}}},
        {},
        AnalysisInputError,
        r"the key 3 of md\['run'\]\['settings'\] is not a string",
    ),
    "whole number in md beyond what tiled keeps": (
        [_good(0)],
        {"detector_serial": 2**63 - 1, "nested": {"ok": 1}},
        {},
        AnalysisInputError,
        r"md\['detector_serial'\] is a whole number beyond ±\(2\*\*53 - 1\)",
    ),
    "data_dicts entry that is not a mapping": (
        [_good(0), [1, 2]],
        {},
        {},
        AnalysisInputError,
        r"data_dicts\[1\] must map stream names",
    ),
}


@pytest.mark.parametrize("asset_form", ["stream_resource", "resource"])
@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_input_is_refused_and_nothing_is_written(root, case, asset_form):
    data_dicts, md, kwargs, error, message = BAD_CASES[case]
    before = _tree(root)
    with pytest.raises(error, match=message):
        compose(data_dicts, md, root=root, asset_form=asset_form, **kwargs)
    assert _tree(root) == before


PATH_ATTACKS = {
    "parent directory": "../outside.npy",
    "deep parent directory": "a/../../outside.npy",
    "absolute path": "/tmp/outside.npy",
    "percent-encoded dots": "%2e%2e/outside.npy",
    "windows separators": "..\\outside.npy",
    "the root itself": ".",
}


@pytest.mark.parametrize("attack", sorted(PATH_ATTACKS))
def test_resource_paths_must_stay_inside_the_root(root, attack):
    before = _tree(root.parent)
    writers = {
        "image": {
            "writer": __import__("bluesky_analysis_store").NPYWriter,
            "resource": {"func": _relative, "kwargs": {"path": PATH_ATTACKS[attack]}},
            "spec": "BAS_NPY",
        }
    }
    with pytest.raises(UnsafePathError, match=r"\['primary'\]\['image'\]: resource path"):
        compose([_good(0)], {}, root=root, writers=writers)
    assert _tree(root.parent) == before


def test_symlink_out_of_the_root_is_refused(root, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, root / "link")
    writers = {
        "image": {
            "writer": __import__("bluesky_analysis_store").NPYWriter,
            "resource": {"func": _relative, "kwargs": {"path": "link/escape.npy"}},
            "spec": "BAS_NPY",
        }
    }
    before = _tree(tmp_path)
    with pytest.raises(
        UnsafePathError, match=r"resolves to .*outside/escape.npy.*outside the root"
    ):
        compose([_good(0)], {}, root=root, writers=writers)
    assert _tree(tmp_path) == before


def test_existing_file_is_never_overwritten(root):
    writers = {
        "image": {
            "writer": __import__("bluesky_analysis_store").NPYWriter,
            "resource": {"func": _relative, "kwargs": {"path": "existing.txt"}},
            "spec": "BAS_NPY",
        }
    }
    before = _tree(root)
    with pytest.raises(AnalysisInputError, match=r"existing.txt' already exists"):
        compose([_good(0)], {}, root=root, writers=writers)
    assert _tree(root) == before


def test_written_key_without_root_is_refused():
    with pytest.raises(AnalysisInputError, match=r"\['image'\] is written to a file but no root"):
        compose([_good(0)], {}, writers={"image": "BAS_HDF5"})


def test_failure_while_writing_removes_every_file_already_written(root):
    """The second key's writer fails after the first key's file is complete: both vanish."""

    class FailingWriter:
        def __init__(self, resource_path):
            self.path = resource_path
            Path(resource_path).write_bytes(b"partial")

        def __call__(self, value):
            raise ValueError("disk on fire")

        def close(self):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.close()

    data = [{"primary": {"image": np.zeros((4, 4)), "z": np.zeros(3)}}]
    writers = {"image": "BAS_HDF5", "z": {"writer": FailingWriter, "spec": "BAS_NPY"}}
    before = _tree(root)
    with pytest.raises(AnalysisInputError, match=r"\['z'\]: writer 'BAS_NPY' refused the value"):
        compose(data, {}, root=root, writers=writers)
    assert _tree(root) == before
