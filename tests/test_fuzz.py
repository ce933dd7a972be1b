"""Bad input, fuzzed: every case ends in a typed error with nothing written, or a correct run.

Hypothesis draws ``data_dicts``, ``md``, provenance, ``writers`` entries (spec names, bad names,
DBEP 6 dicts whose resource funcs return odd paths or format metadata into paths) and document
streams given to ``AnalysisStore.insert``. The property, for every case:

- compose / save: an :class:`AnalysisStoreError` subclass, the root's directory tree byte-identical
  and no run in the catalog; or a run that reads back equal;
- document streams: each document is accepted or refused with an :class:`AnalysisStoreError`
  subclass (never another exception); a refused start leaves no run; a stream accepted whole
  reads back equal.

Each test reports its counts (cases tried, runs made, typed refusals by error type) through
``helpers.figure``, for RELIABILITY.md.
"""

from __future__ import annotations

import math
import os
import tempfile
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from helpers import PARENT_UID, figure, insert_all, make_provenance
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from bluesky_analysis_store import (
    AnalysisStore,
    NPYWriter,
    UnsafePathError,
    compose_analysis_run,
)
from bluesky_analysis_store.core._errors import AnalysisStoreError


def fuzz(max_examples: int) -> settings:
    """Settings for a fuzz test; ``BAS_FUZZ_SCALE`` (``make fuzz``) multiplies its cases."""
    scale = int(os.environ.get("BAS_FUZZ_SCALE", "1"))
    return settings(max_examples=max_examples * scale, **_FUZZ)


_FUZZ: dict[str, Any] = dict(
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,
)
BASE_PROVENANCE = make_provenance().model_dump(mode="json")
#: The strategies draw 100 kB strings on purpose; hypothesis warns when it prints such a case.
pytestmark = pytest.mark.filterwarnings("ignore:Generating overly large repr")


def _report(area: str, claim: str, stats: Counter[str], capsys: pytest.CaptureFixture[str]) -> None:
    errors = ",".join(f"{k[6:]}:{v}" for k, v in sorted(stats.items()) if k.startswith("error:"))
    values = {k: stats[k] for k in ("cases", "ok", "refused")}
    if stats["attacks"]:
        values.update(path_attacks=stats["attacks"], rejected=stats["attacks_rejected"])
    if "complete" in stats:
        values["complete_and_equal"] = stats["complete"]
    figure(capsys, area, claim, **values, errors=errors or "none")


def _tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): (
            p.read_bytes() if p.is_file() and not p.is_symlink() else b"<dir or link>"
        )
        for p in sorted(root.rglob("*"))
    }


# ---------------------------------------------------------------- strategies: values and data

GOOD_NAMES = ["x", "image", "a_b", "t-1", "Z9"]
BAD_NAMES = ["a.b", "a/b", "..", "", "-x", "é", "x" * 200, "time", "seq_num", "a\\b", 3, None]
#: Mostly good names and values, so that runs are made as well as refused.
names = st.sampled_from(GOOD_NAMES * 6 + BAD_NAMES)
streams_names = st.sampled_from(["primary", "fit"] * 12 + BAD_NAMES)

DTYPES = [np.dtype(c) for c in ("f4", ">f8", "i2", "u1", "?", "c8", "<U3", "M8[s]", "O")]
small_arrays = hnp.arrays(
    st.sampled_from(DTYPES),
    hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5),
)
big_arrays = st.builds(
    lambda shape, dtype, fill: np.full(shape, fill, dtype=dtype),
    st.sampled_from([(5, 5), (17,), (3, 4, 2)]),
    st.sampled_from(["f4", "i4", "u2", "c16", "?"]),
    st.sampled_from([0, 1, 7]),
)
floats = st.floats(allow_nan=True, allow_infinity=True)
frames = st.builds(
    lambda n, col, index: pd.DataFrame(
        {col: np.arange(n, dtype="f8")},
        index=pd.Index(np.arange(n), name=index) if index else None,
    ),
    st.integers(0, 4),
    st.sampled_from(["mu", "a.b", "", "x/y", "mu\x00"]),
    st.sampled_from([None, "e", "mu"]),
)
good_values = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(-(2**31), 2**31),
    st.booleans(),
    st.text(max_size=5),
    big_arrays,
)
values = st.one_of(
    good_values,
    good_values,
    good_values,
    floats,
    st.integers(min_value=-(2**70), max_value=2**70),
    st.booleans(),
    st.text(max_size=20),
    st.just("y" * 100_000),
    small_arrays,
    big_arrays,
    frames,
    st.sampled_from([None, b"bytes", object(), {"a": 1}, [1, 2], np.datetime64(1, "s")]),
    st.sampled_from([np.float32(1.5), np.int64(3), np.str_("s"), np.complex64(1j)]),
)


@st.composite
def data_dicts(draw: st.DrawFn) -> Any:
    if draw(st.integers(0, 20)) == 0:  # not a list of mappings at all
        return draw(st.sampled_from([None, "primary", {"primary": {"x": 1}}, [], [[1, 2]], [{}]]))
    entry = draw(
        st.dictionaries(
            streams_names,
            st.dictionaries(names, values, min_size=0, max_size=3),
            min_size=1,
            max_size=2,
        )
    )
    n = draw(st.integers(1, 3))
    entries = [{s: dict(d) for s, d in entry.items()} for _ in range(n)]
    change = draw(st.sampled_from(["none", "none", "drop", "add", "retype"]))
    if change != "none" and n > 1:
        stream = next(iter(entries[-1]))
        data = entries[-1][stream]
        if change == "drop" and data:
            data.pop(next(iter(data)))
        elif change == "add":
            data[draw(names)] = draw(values)
        elif change == "retype" and data:
            data[next(iter(data))] = draw(values)
    return entries


#: Well-formed data only (good names, good values, the same keys in every entry): so that a
#: fuzzed save makes runs, not only refusals, and the read-back half of the property is tried.
well_formed_data = st.builds(
    lambda entry, n: [{s: dict(d) for s, d in entry.items()} for _ in range(n)],
    st.dictionaries(
        st.sampled_from(["primary", "fit"]),
        st.dictionaries(st.sampled_from(GOOD_NAMES), good_values, min_size=1, max_size=3),
        min_size=1,
        max_size=2,
    ),
    st.integers(1, 3),
)

json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    floats,
    st.text(max_size=10),
    st.just("z" * 100_000),
    st.just("{uid}/../../{sample}"),
)
json_values = st.recursive(
    json_leaf,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=6,
)
md_keys = st.text(max_size=8) | st.sampled_from(
    ["uid", "time", "provenance", "lineage_hash", "a.b", "a/b", "sample", 1]
)
mds = st.one_of(
    st.dictionaries(st.sampled_from(["a", "b", "sample_name"]), st.text(max_size=5), max_size=2),
    st.dictionaries(st.sampled_from(["a", "b", "sample_name"]), st.text(max_size=5), max_size=2),
    st.dictionaries(md_keys, json_values | st.sampled_from([object(), (1, 2), {1, 2}]), max_size=3),
    st.sampled_from([None, [("a", 1)], "md"]),
)


def _mutate_provenance(kind: str, value: Any) -> Any:
    prov: dict[str, Any] = {
        k: (dict(v) if isinstance(v, dict) else v) for k, v in BASE_PROVENANCE.items()
    }
    prov["parameters"] = {"case": uuid.uuid4().hex}  # a fresh lineage per case
    if kind == "valid":
        return prov
    if kind == "drop":
        prov.pop(value)
    elif kind == "extra":
        prov[value] = 1
    elif kind == "code.name":
        prov["code"]["name"] = value
    elif kind == "parameters":
        prov["parameters"] = {"p": value}
    elif kind == "parents":
        prov["parents"] = value
    elif kind == "whole":
        return value
    return prov


provenances = st.one_of(
    st.just(("valid", None)),
    st.just(("valid", None)),
    st.just(("valid", None)),
    st.just(("valid", None)),
    st.tuples(st.just("drop"), st.sampled_from(["code", "created", "schema_version"])),
    st.tuples(st.just("extra"), st.sampled_from(["extra", "uid", ""])),
    st.tuples(st.just("code.name"), st.sampled_from(["", None, 3, "../x", "n" * 10_000])),
    st.tuples(st.just("parameters"), json_values),
    st.tuples(
        st.just("parents"),
        st.sampled_from([[], [{"uid": "not-a-uid"}], [{"uid": PARENT_UID, "x": 1}], "abc", [None]]),
    ),
    st.tuples(st.just("whole"), st.sampled_from([None, [], "prov", 3, {}])),
).map(lambda kv: _mutate_provenance(*kv))

# ---------------------------------------------------------------- strategies: writers and paths

PATH_ATTACKS = [
    "../outside.npy",
    "a/../../outside.npy",
    "/tmp/outside.npy",
    "%2e%2e/outside.npy",
    "%2E%2E%2Foutside.npy",
    "..\\outside.npy",
    "a\\..\\..\\outside.npy",
    "C:\\outside.npy",
    ".",
    "",
    "link/escape.npy",
    "link/../../outside.npy",
    "..",
    "./../outside.npy",
    "a/./../../../outside.npy",
    "//outside.npy",
]
GOOD_PATHS = ["file.npy", "sub/dir/file.npy", "with space.npy"]


def _path_func(docs: Any, data_key: str, *, path: Any) -> Any:
    return path, {}


def _md_path_func(docs: Any, data_key: str, *, template: str) -> Any:
    """Formats start metadata into the path: template injection through md."""
    return template.format(**docs["start"], data_key=data_key), {}


def _odd_return_func(docs: Any, data_key: str, *, value: Any) -> Any:
    return value


def _raising_func(docs: Any, data_key: str) -> Any:
    raise KeyError("sample")


def _dbep6(resource: Any, **extra: Any) -> dict[str, Any]:
    return {"writer": NPYWriter, "spec": "BAS_NPY", "resource": resource, **extra}


writer_entries = st.one_of(
    st.sampled_from(["BAS_HDF5", "BAS_NPY", "BAS_TIFF", "BAS_TABLE_HDF5"]),
    st.sampled_from(["NO_SUCH", "", "bas_hdf5", 3, None, b"BAS_HDF5"]),
    st.sampled_from(PATH_ATTACKS + GOOD_PATHS).map(
        lambda p: _dbep6({"func": _path_func, "kwargs": {"path": p}})
    ),
    st.sampled_from(["{sample}/x.npy", "{uid}/{sample}.npy", "{sample}"]).map(
        lambda t: _dbep6({"func": _md_path_func, "kwargs": {"template": t}})
    ),
    st.sampled_from(
        [None, "x.npy", ("x.npy",), ("x.npy", None), ("x.npy", {"bogus": 1}), (3, {}), (b"x", {})]
    ).map(lambda v: _dbep6({"func": _odd_return_func, "kwargs": {"value": v}})),
    st.just(_dbep6({"func": _raising_func})),
    st.sampled_from(
        [
            {"writer": NPYWriter},
            {"writer": NPYWriter, "spec": "BAS_NPY", "bogus": 1},
            _dbep6({"func": 3}),
            _dbep6({"func": _path_func, "kwargs": 3}),
            _dbep6({"func": _path_func, "kwargs": {"path": "a.npy"}, "extra": 1}),
            _dbep6(None, root=3),
            _dbep6(None, root="/no/such/dir"),
            _dbep6("resource"),
            {"writer": NPYWriter, "spec": 3},
        ]
    ),
)
writers_arg = st.one_of(
    st.none(),
    st.none(),
    st.dictionaries(names, writer_entries, max_size=2),
    st.sampled_from([["BAS_HDF5"], "BAS_HDF5"]),
)


def _is_attack(entry: Any) -> bool:
    if not isinstance(entry, dict) or not isinstance(entry.get("resource"), dict):
        return False
    kwargs = entry["resource"].get("kwargs") or {}
    return (isinstance(kwargs, dict) and kwargs.get("path") in PATH_ATTACKS) or (
        entry["resource"].get("func") is _md_path_func
    )


# ---------------------------------------------------------------- compose


def _fresh_root(base: Path) -> tuple[Path, Path]:
    """A root with a file in it and a symlink pointing out of it; and its parent."""
    parent = Path(tempfile.mkdtemp(dir=base))
    root = parent / "root"
    root.mkdir()
    (root / "existing.txt").write_text("keep me")
    (parent / "outside").mkdir()
    os.symlink(parent / "outside", root / "link")
    return parent, root


def _check_outcome(stats: Counter[str], attempt: Any, parent: Path, writers: Any) -> Any:
    before = _tree(parent)
    attacks = [e for e in (writers.values() if isinstance(writers, dict) else []) if _is_attack(e)]
    stats["cases"] += 1
    stats["attacks"] += bool(attacks)
    refused: AnalysisStoreError | None = None
    try:
        result = attempt()
    except AnalysisStoreError as error:
        refused = error
    if refused is not None:
        stats["refused"] += 1
        stats[f"error:{type(refused).__name__}"] += 1
        stats["attacks_rejected"] += bool(attacks)
        assert _tree(parent) == before, f"a refused case changed the files: {refused}"
        return None
    stats["ok"] += 1
    for entry in attacks:  # only a template that stayed inside the root may have succeeded
        assert (
            entry["resource"].get("func") is _md_path_func
            or entry["resource"]["kwargs"]["path"] not in PATH_ATTACKS
        )
    outside = parent / "outside"  # the target of the root's symlink (compose tests)
    assert not (outside.exists() and any(outside.iterdir()))
    return result


def _md_with_sample(md: Any, sample: str | None) -> Any:
    if sample is not None and isinstance(md, dict):
        return {**md, "sample": sample}
    return md


samples = st.none() | st.sampled_from(["../../up", "ok", "a/../../b", "/abs", "%2e%2e", "..\\x"])


def test_fuzz_compose(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stats: Counter[str] = Counter()

    @fuzz(120)
    @given(
        data_dicts(),
        mds,
        samples,
        provenances,
        writers_arg,
        st.sampled_from(["stream_resource", "resource"]),
    )
    def run(data: Any, md: Any, sample: Any, provenance: Any, writers: Any, form: str) -> None:
        parent, root = _fresh_root(tmp_path)
        md = _md_with_sample(md, sample)
        composed = _check_outcome(
            stats,
            lambda: compose_analysis_run(
                data, md, root=root, writers=writers, provenance=provenance, asset_form=form
            ),
            parent,
            writers,
        )
        if composed is not None:
            for path in composed.files:
                assert path.resolve().is_relative_to(root.resolve())
                assert path.is_file()

    run()
    _report(
        "fuzz",
        "compose_analysis_run on drawn data_dicts, md, provenance, writers (spec names, DBEP 6 "
        "dicts with odd or hostile resource funcs): a typed error with the files untouched, or "
        "a run whose files stay inside the root",
        stats,
        capsys,
    )
    assert stats["cases"] > 0


def test_fuzz_path_attacks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Every path attack, through a DBEP 6 resource func or md formatted into a path, is
    refused with UnsafePathError before anything is written."""
    stats: Counter[str] = Counter()

    @fuzz(40)
    @given(
        st.sampled_from(PATH_ATTACKS),
        st.booleans(),
        st.sampled_from(["stream_resource", "resource"]),
    )
    def run(attack: str, through_md: bool, form: str) -> None:
        parent, root = _fresh_root(tmp_path)
        if through_md:
            entry = _dbep6({"func": _md_path_func, "kwargs": {"template": "{sample}"}})
            md = {"sample": attack}
        else:
            entry = _dbep6({"func": _path_func, "kwargs": {"path": attack}})
            md = {}
        data = [{"primary": {"image": np.zeros((5, 5), "f4")}}]
        before = _tree(parent)
        stats["cases"] += 1
        stats["attacks"] += 1
        with pytest.raises((UnsafePathError,)) as info:
            compose_analysis_run(
                data,
                md,
                root=root,
                writers={"image": entry},
                provenance=make_provenance(),
                asset_form=form,
            )
        assert "resource path" in str(info.value)
        stats["refused"] += 1
        stats["attacks_rejected"] += 1
        stats[f"error:{type(info.value).__name__}"] += 1
        assert _tree(parent) == before

    run()
    _report(
        "path attacks",
        "'..', absolute, %2e%2e, Windows separators, symlinks out of the root and md formatted "
        "into paths (DBEP 6 resource funcs): UnsafePathError before anything is written",
        stats,
        capsys,
    )
    assert stats["attacks_rejected"] == stats["attacks"] > 0


# ---------------------------------------------------------------- save (compose + insert)


def _expected_column(values: list[Any]) -> Any:
    return [v.tolist() if isinstance(v, np.ndarray | np.generic) else v for v in values]


def _check_read_back(store: AnalysisStore, uid: str, data: list[Any], md: dict[str, Any]) -> None:
    run = store[uid]
    start = run.metadata["start"]
    for key, value in md.items():
        assert start[key] == value, key
    streams: dict[str, list[dict[str, Any]]] = {}
    for entry in data:
        for stream, values in entry.items():
            streams.setdefault(stream, []).append(values)
    for stream, rows in streams.items():
        node = run[stream]
        table = None
        for key in rows[0]:
            column = [row[key] for row in rows]
            first = column[0]
            if isinstance(first, pd.DataFrame):
                assert len(node[key].read()) == len(column)
            elif (key in node and getattr(first, "size", 1) > 16) or np.iscomplexobj(first):
                expected = np.stack([np.asarray(v) for v in column])
                actual = node[key].read()
                assert actual.shape == expected.shape, key
                assert actual.tobytes() == expected.astype(actual.dtype).tobytes(), key
            else:
                table = node.read() if table is None else table
                got = [v.tolist() if hasattr(v, "tolist") else v for v in table[key].values]
                assert got == _expected_column(column), key


def test_fuzz_save_reads_back_or_writes_nothing(
    tiled_catalog: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    stats: Counter[str] = Counter()
    store = AnalysisStore(tiled_catalog.new_runs_container(), tiled_catalog.new_root())
    parent = store.root

    @fuzz(30)
    @given(
        data_dicts() | well_formed_data,
        st.just({}) | mds,
        st.builds(_mutate_provenance, st.just("valid"), st.none()) | provenances,
        st.none() | writers_arg,
    )
    def run(data: Any, md: Any, provenance: Any, writers: Any) -> None:
        runs_before = len(store)
        uid = _check_outcome(
            stats,
            lambda: store.save(data, md, writers=writers, provenance=provenance),
            parent,
            writers,
        )
        if uid is None:
            assert len(store) == runs_before
        else:
            assert len(store) == runs_before + 1
            _check_read_back(store, uid, data, md)

    run()
    _report(
        "fuzz",
        "AnalysisStore.save on drawn input: a typed error with no file and no run, or a run that "
        "reads back equal through tiled",
        stats,
        capsys,
    )


# ---------------------------------------------------------------- document streams


def _valid_stream(form: str, root: Path) -> list[tuple[str, dict[str, Any]]]:
    data = [
        {"primary": {"x": float(i), "n": i, "s": "a" * i, "image": np.full((5, 5), i, "f4")}}
        for i in range(3)
    ]
    prov = make_provenance(parameters={"case": uuid.uuid4().hex})
    return list(compose_analysis_run(data, {"k": 1}, root=root, provenance=prov, asset_form=form))


def _set_path(doc: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for part in path[:-1]:
        doc = doc[part]
    doc[path[-1]] = value


MUTATIONS = [
    "none",
    "drop_field",
    "extra_field",
    "mistype_field",
    "nan",
    "inf_in_event",
    "huge_string",
    "dotted_key",
    "slashed_key",
    "swap",
    "datum_before_resource",
    "unknown_descriptor",
    "bad_name",
    "not_a_dict",
    "duplicate_start",
    "event_value_mistyped",
    "missing_event_key",
    "extra_event_key",
    "stop_first",
]


def _mutate_stream(
    docs: list[tuple[str, dict[str, Any]]], mutation: str, index: int, draw: Any
) -> list[tuple[str, Any]]:
    docs = [(n, dict(d)) for n, d in docs]
    i = index % len(docs)
    name, doc = docs[i]
    if mutation == "drop_field" and doc:
        doc.pop(draw(st.sampled_from(sorted(doc))))
    elif mutation == "extra_field":
        doc[draw(st.sampled_from(["extra", "a.b", "x/y"]))] = draw(json_values)
    elif mutation == "mistype_field" and doc:
        doc[draw(st.sampled_from(sorted(doc)))] = draw(
            st.sampled_from([None, 3, "s", [1], {"a": 1}, 1.5, True])
        )
    elif mutation == "nan":
        doc["time"] = float("nan")
    elif mutation == "huge_string":
        doc["note"] = "h" * 1_000_000
    elif mutation in ("dotted_key", "slashed_key"):
        bad = "a.b" if mutation == "dotted_key" else "a/b"
        for n, d in docs:
            if n == "descriptor":
                d["data_keys"] = {
                    **d["data_keys"],
                    bad: {"dtype": "number", "shape": [], "source": "s"},
                }
            if n == "event":
                d["data"] = {**d["data"], bad: 1.0}
                d["timestamps"] = {**d["timestamps"], bad: 1.0}
    elif mutation == "swap" and len(docs) > 1:
        j = draw(st.integers(0, len(docs) - 1))
        docs[i], docs[j] = docs[j], docs[i]
    elif mutation == "datum_before_resource":
        names = [n for n, _ in docs]
        if "datum" in names and "resource" in names:
            r, d = names.index("resource"), names.index("datum")
            docs[r], docs[d] = docs[d], docs[r]
    elif mutation == "unknown_descriptor":
        for n, d in docs:
            if n in ("event", "stream_datum"):
                d["descriptor"] = str(uuid.uuid4())
                break
    elif mutation == "bad_name":
        docs[i] = (draw(st.sampled_from(["evnet", "", "bulk_events", "datum_page", 3])), doc)
    elif mutation == "not_a_dict":
        docs[i] = (name, draw(st.sampled_from([None, [], "doc", 3])))
    elif mutation == "duplicate_start":
        docs.insert(i + 1 if i + 1 < len(docs) else 1, docs[0])
    elif mutation in (
        "event_value_mistyped",
        "missing_event_key",
        "extra_event_key",
        "inf_in_event",
    ):
        for n, d in docs:
            if n == "event":
                data = dict(d["data"])
                if mutation == "event_value_mistyped":
                    data["x"] = draw(st.sampled_from(["str", None, [1.0], True, {"a": 1}]))
                elif mutation == "missing_event_key":
                    data.pop("x")
                elif mutation == "extra_event_key":
                    data["zz"] = 1.0
                else:
                    data["x"] = draw(st.sampled_from([math.inf, -math.inf, math.nan]))
                d["data"] = data
                break
    elif mutation == "stop_first":
        docs.insert(1, docs.pop())
    return docs


def test_fuzz_document_streams(tiled_catalog: Any, capsys: pytest.CaptureFixture[str]) -> None:
    stats: Counter[str] = Counter(complete=0)
    store = AnalysisStore(tiled_catalog.new_runs_container(), tiled_catalog.new_root())

    @fuzz(40)
    @given(
        st.sampled_from(["stream_resource", "resource"]),
        st.sampled_from(MUTATIONS),
        st.integers(0, 30),
        st.data(),
    )
    def run(form: str, mutation: str, index: int, data: Any) -> None:
        valid = _valid_stream(form, tiled_catalog.new_root())
        docs = _mutate_stream(valid, mutation, index, data.draw)
        stats["cases"] += 1
        refused = []
        for name, doc in docs:
            try:
                store.insert(name, doc)
            except AnalysisStoreError as error:
                refused.append((name, error))
                stats[f"error:{type(error).__name__}"] += 1
        stats["refused" if refused else "ok"] += 1
        uid = valid[0][1]["uid"]
        starts_refused = [n for n, _ in refused if n == "start"]
        starts_sent = [n for n, d in docs if n == "start" and isinstance(d, dict)]
        if starts_refused and len(starts_refused) == len(starts_sent):
            assert uid not in store, "a refused start left a run behind"
        stop = (store[uid].metadata.get("stop") or {}) if uid in store else {}
        if not refused:
            assert stop.get("exit_status") == "success", "an accepted stream left no complete run"
        if stop.get("exit_status") != "success":
            return  # not complete, and it does not look complete: hidden from queries
        # it looks complete: then it is complete and reads back equal
        stats["complete"] += 1
        node = store[uid]
        for key in ("k", "note", "extra"):
            if docs[0][0] == "start" and isinstance(docs[0][1], dict) and key in docs[0][1]:
                assert node.metadata["start"][key] == docs[0][1][key], key
        table = node["primary"].base["internal"].read().sort_values("seq_num")
        assert list(table["x"]) == [0.0, 1.0, 2.0]
        assert list(table["n"]) == [0, 1, 2]
        image = node["primary"]["image"].read()
        for i in range(3):
            np.testing.assert_array_equal(image[i], np.full((5, 5), i))

    run()
    _report(
        "fuzz",
        "document streams given to store.insert (missing, extra and mistyped fields, NaN, huge "
        "strings, '.' and '/' keys, swapped documents, datums before resources, unknown "
        "descriptors, stops first): each refused with a typed error, and a run that looks "
        "complete is complete and reads back equal",
        stats,
        capsys,
    )


def test_a_descriptor_that_flips_a_key_kind_poisons_its_run(tiled_catalog: Any) -> None:
    """TiledWriter keeps one kind per key name in a run; the gate refuses the flip, and the run
    that lost the descriptor can no longer claim success."""
    from bluesky_analysis_store import InvalidDocumentError

    store = AnalysisStore(tiled_catalog.new_runs_container(), tiled_catalog.new_root())
    docs = _valid_stream("stream_resource", store.root)
    names = [name for name, _ in docs]
    for name, doc in docs[: names.index("stop")]:
        store.insert(name, doc)
    descriptor = dict(docs[names.index("descriptor")][1])
    flipped = dict(
        descriptor,
        uid=str(uuid.uuid4()),
        name="fit",
        data_keys={"image": {"dtype": "number", "shape": [], "source": "fit"}},
    )
    with pytest.raises(
        InvalidDocumentError,
        match=r"data key 'image' is inside the events in stream 'fit' but in a file in an "
        r"earlier stream",
    ):
        store.insert("descriptor", flipped)
    with pytest.raises(InvalidDocumentError, match="lost document"):
        store.insert("stop", docs[-1][1])
    uid = docs[0][1]["uid"]
    assert not store[uid].metadata.get("stop")  # it does not look complete
    assert store.derived_from(PARENT_UID) == []
    store.insert("stop", dict(docs[-1][1], exit_status="fail", reason="a descriptor refused"))
    assert store[uid].metadata["stop"]["exit_status"] == "fail"  # closed honestly


@pytest.mark.parametrize(
    ("form", "moved"),  # the documents sent after the stop
    [
        ("stream_resource", "event"),  # found by the fuzzer: stream datums arrived, events not
        ("stream_resource", "stream_datum"),  # events arrived, the file's rows not
        ("resource", "event"),
    ],
)
def test_a_success_stop_before_part_of_its_rows_is_refused(
    tiled_catalog: Any, form: str, moved: str
) -> None:
    """A row counts once its event and its slice of every stream resource have arrived: a
    success stop sent before either part leaves the run without a stop, not complete-looking."""

    store = AnalysisStore(tiled_catalog.new_runs_container(), tiled_catalog.new_root())
    docs = _valid_stream(form, store.root)
    held_back = [(name, doc) for name, doc in docs if name == moved]
    docs = [(name, doc) for name, doc in docs if name != moved] + held_back
    refused = insert_all(store, docs)
    assert refused[0][0] == "stop"
    assert "claims success with num_events {'primary': 3}, but this run received" in refused[0][1]
    uid = docs[0][1]["uid"]
    assert not store[uid].metadata.get("stop")
    assert store.derived_from(PARENT_UID) == []


@pytest.mark.parametrize(
    ("form", "field"), [("stream_resource", "parameters"), ("resource", "resource_kwargs")]
)
@pytest.mark.parametrize("given", [{"a": 1}, {"dataset": ""}, {"dataset": 3}])
def test_an_hdf5_asset_without_its_dataset_is_refused(
    tiled_catalog: Any, form: str, field: str, given: dict[str, Any]
) -> None:
    """Found by `make fuzz`: tiled opens an HDF5 asset without a dataset at its root group, so
    the run looked complete and could not be read."""

    store = AnalysisStore(tiled_catalog.new_runs_container(), tiled_catalog.new_root())
    docs = _valid_stream(form, store.root)
    asset = next(doc for name, doc in docs if name == form)
    asset[field] = given
    refused = insert_all(store, docs)
    # a legacy resource's dataset may come with its datums (TiledWriter merges their kwargs)
    assert refused[0][0] == ("datum" if form == "resource" else form)
    assert "an HDF5 file needs its dataset, the path of the data inside" in refused[0][1]
    assert f"{field}['dataset']" in refused[0][1]
    assert refused[-1][0] == "stop"  # the run never claims success
    assert not store[docs[0][1]["uid"]].metadata.get("stop")


def test_an_event_integer_beyond_64_bits_is_refused(tiled_catalog: Any) -> None:
    """TiledWriter would fail on it only when the stop flushes the event table."""

    store = AnalysisStore(tiled_catalog.new_runs_container(), tiled_catalog.new_root())
    docs = _valid_stream("resource", store.root)
    names = [name for name, _ in docs]
    event = docs[names.index("event")][1]
    event["data"] = {**event["data"], "n": 2**63}
    refused = insert_all(store, docs)
    assert refused[0][0] == "event"
    assert "data['n'] (row 0) does not fit a 64-bit signed integer" in refused[0][1]
    assert refused[-1][0] == "stop"


@pytest.mark.parametrize("form", ["stream_resource", "resource"])
def test_every_field_dropped_in_turn_is_refused_or_harmless(tiled_catalog: Any, form: str) -> None:
    """Each field of the descriptor and the asset documents of a valid stream, dropped in turn (a
    descriptor without its 'name', found by `make fuzz`, once crashed the checks with a
    KeyError): a typed error, or a run that looks complete and reads back."""

    template = _valid_stream(form, tiled_catalog.new_root())
    first = {name: i for i, (name, _) in reversed(list(enumerate(template)))}
    structural = [first[n] for n in ("descriptor", form, "datum", "stream_datum") if n in first]
    cases = [(i, field) for i in structural for field in sorted(template[i][1])]
    complete = 0
    for i, field in cases:
        store = AnalysisStore(tiled_catalog.new_runs_container(), tiled_catalog.new_root())
        docs = _valid_stream(form, store.root)
        docs[i][1].pop(field)
        insert_all(store, docs)
        uid = docs[0][1].get("uid", str(uuid.uuid4()))
        if uid in store and (store[uid].metadata.get("stop") or {}).get("exit_status") == "success":
            complete += 1
            assert list(store[uid]["primary"].read()["n"].values) == [0, 1, 2], (i, field)
    assert len(cases) >= 10
    assert complete < len(cases)
