"""Every writer/handler pair gives back, bit for bit, what its writer wrote.

Property tests (hypothesis) over the four pairs of ``default_registry()``: the writer and the
handler are built from the same resource path and resource kwargs, as DBEP 6 prescribes, and the
file each writer leaves behind is also read with the format's own library (h5py, numpy, tifffile).
"""

from __future__ import annotations

import gc
import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd
import pytest
import tifffile
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from bluesky_analysis_store import UnsupportedValueError, WriterHandlerPair, default_registry

REGISTRY = default_registry()
ARRAY_SPECS = ("BAS_HDF5", "BAS_NPY", "BAS_TIFF")
SPECS = (*ARRAY_SPECS, "BAS_TABLE_HDF5")

PROPERTY_SETTINGS = settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def _dtypes(codes: str) -> list[np.dtype]:
    """Each dtype code in both byte orders (one entry for single-byte types)."""
    result = []
    for code in codes.split():
        dtype = np.dtype(code)
        result.append(dtype.newbyteorder("<"))
        if dtype.itemsize > 1:
            result.append(dtype.newbyteorder(">"))
    return result


INT_DTYPES = _dtypes("i1 i2 i4 i8")
UINT_DTYPES = _dtypes("u1 u2 u4 u8")
FLOAT_DTYPES = _dtypes("f2 f4 f8")
COMPLEX_DTYPES = _dtypes("c8 c16")
BOOL_DTYPES = [np.dtype("?")]
#: HDF5 and NPY hold every numeric and bool dtype, in either byte order.
ARRAY_DTYPES = INT_DTYPES + UINT_DTYPES + FLOAT_DTYPES + COMPLEX_DTYPES + BOOL_DTYPES
#: TIFF has sample formats for integers, IEEE floats and complex, but none for bool.
TIFF_DTYPES = INT_DTYPES + UINT_DTYPES + FLOAT_DTYPES + COMPLEX_DTYPES
#: Table columns: pandas keeps native byte order, which is all a DataFrame needs.
TABLE_COLUMN_DTYPES = [d for d in ARRAY_DTYPES if d.isnative]
#: pandas has no float16 index.
TABLE_INDEX_DTYPES = [d for d in TABLE_COLUMN_DTYPES if d != np.dtype("f2")]

NDIM_0_TO_4 = hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=4)
FRAME_2D = hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=6)


SPECIAL_FLOAT_BITS = {
    # quiet NaN, NaN with payload, negative NaN, signalling NaN, +inf, -inf, -0.0, min subnormal
    2: ["7e00", "7e2a", "fe00", "7c01", "7c00", "fc00", "8000", "0001"],
    4: ["7fc00000", "7fc0beef", "ffc00000", "7f800001", "7f800000", "ff800000", "80000000", "1"],
    8: [
        "7ff8000000000000",
        "7ff800000000beef",
        "fff8000000000000",
        "7ff0000000000001",
        "7ff0000000000000",
        "fff0000000000000",
        "8000000000000000",
        "1",
    ],
}


def float_bits(dtype: np.dtype, shape: tuple[int, ...]) -> st.SearchStrategy[np.ndarray]:
    """Float or complex arrays built from bit patterns, mostly NaN payloads and infinities."""
    width = dtype.itemsize if dtype.kind == "f" else dtype.itemsize // 2
    special = [int(h, 16) for h in SPECIAL_FLOAT_BITS[width]]
    elements = st.sampled_from(special) | st.integers(0, 2 ** (8 * width) - 1)
    inner = shape if dtype.kind == "f" else (*shape, 2)  # complex: (real, imaginary) pairs
    native = np.dtype(f"{dtype.kind}{dtype.itemsize}")
    return hnp.arrays(np.dtype(f"u{width}"), inner, elements=elements).map(
        lambda bits: bits.view(native).reshape(shape).astype(dtype)
    )


def frames(dtype: np.dtype, shape: tuple[int, ...]) -> st.SearchStrategy[np.ndarray]:
    """Arrays of ``dtype`` and ``shape``: hypothesis' edge values (NaN, inf, extremes) or raw bits.

    Raw bits, and for floats bit patterns drawn from ``SPECIAL_FLOAT_BITS``, reach NaN payloads,
    signalling and negative NaNs and subnormals; bool stays 0/1.
    """
    typical = hnp.arrays(dtype, shape)
    if dtype.kind == "b":
        return typical
    nbytes = dtype.itemsize * math.prod(shape)
    raw = st.binary(min_size=nbytes, max_size=nbytes).map(
        lambda data: np.frombuffer(data, dtype=dtype).reshape(shape).copy()
    )
    if dtype.kind in "fc":
        return st.one_of(typical, raw, float_bits(dtype, shape))
    return st.one_of(typical, raw)


@st.composite
def array_stacks(
    draw: st.DrawFn, dtypes: list[np.dtype], shapes: st.SearchStrategy[tuple[int, ...]]
) -> list[np.ndarray]:
    """1-5 arrays sharing one dtype and one shape."""
    dtype = draw(st.sampled_from(dtypes))
    shape = draw(shapes)
    return draw(st.lists(frames(dtype, shape), min_size=1, max_size=5))


COLUMN_NAMES = st.text(
    # NUL and lone surrogates cannot be HDF5 member names: see test_table_column_name_*.
    st.characters(codec="utf-8", exclude_characters="\x00"),
    min_size=1,
    max_size=8,
)


INDEX_KINDS = ("default", "named", "unnamed")


@st.composite
def table_stacks(draw: st.DrawFn, index_kind: str | None = None) -> list[pd.DataFrame]:
    """1-5 DataFrames sharing columns, dtypes, row count and index.

    The index is the default ``RangeIndex`` (not stored), a named column (``set_index``, e.g. a
    float "energy"), or an unnamed non-default index (stored under the field "index").
    """
    index_kind = index_kind or draw(st.sampled_from(INDEX_KINDS))
    names = draw(st.lists(COLUMN_NAMES, min_size=1, max_size=4, unique=True))
    # The unnamed index is stored under "index": a column of that name is refused.
    assume(index_kind != "unnamed" or "index" not in names)
    dtypes = draw(
        st.lists(st.sampled_from(TABLE_COLUMN_DTYPES), min_size=len(names), max_size=len(names))
    )
    nrows = draw(st.integers(min_value=0, max_value=20))
    index_name = draw((st.just("energy") | COLUMN_NAMES).filter(lambda name: name not in names))
    index_dtype = draw(st.sampled_from(TABLE_INDEX_DTYPES))
    count = draw(st.integers(min_value=1, max_value=5))
    tables = []
    for _ in range(count):
        columns = {
            name: draw(frames(dtype, (nrows,))) for name, dtype in zip(names, dtypes, strict=True)
        }
        if index_kind == "default":
            tables.append(pd.DataFrame(columns))
            continue
        columns[index_name] = draw(frames(index_dtype, (nrows,)))
        table = pd.DataFrame(columns).set_index(index_name)
        tables.append(table if index_kind == "named" else table.rename_axis(None))
    return tables


VALUE_STACKS: dict[str, st.SearchStrategy[list[Any]]] = {
    "BAS_HDF5": array_stacks(ARRAY_DTYPES, NDIM_0_TO_4),
    "BAS_NPY": array_stacks(ARRAY_DTYPES, NDIM_0_TO_4),
    "BAS_TIFF": array_stacks(TIFF_DTYPES, FRAME_2D),
    "BAS_TABLE_HDF5": table_stacks(),
}


# --------------------------------------------------------------------------------------------
# helpers


def _resource_kwargs(pair: WriterHandlerPair, first_value: Any) -> dict[str, Any]:
    kwargs = pair.resource_kwargs(first_value, pair.describe(first_value))
    # Resource kwargs travel inside a JSON document; the handler must work from that copy.
    decoded = json.loads(json.dumps(kwargs))
    assert decoded == kwargs
    return decoded


def _write(pair: WriterHandlerPair, path: str, kwargs: dict[str, Any], values: list[Any]) -> list:
    with pair.writer(path, **kwargs) as writer:
        datum_kwargs = [writer(value) for value in values]
    return [json.loads(json.dumps(d)) for d in datum_kwargs]


def _read(pair: WriterHandlerPair, path: str, kwargs: dict[str, Any], datum_kwargs: list) -> list:
    with pair.handler(path, **kwargs) as handler:
        return [handler(**d) for d in datum_kwargs]


def assert_same_array(read: Any, written: np.ndarray) -> None:
    """Bit-exact: dtype (with byte order), shape and bytes (so NaN payloads count)."""
    assert isinstance(read, np.ndarray), type(read)
    assert read.dtype == written.dtype, (read.dtype, written.dtype)
    assert read.shape == written.shape, (read.shape, written.shape)
    assert read.tobytes() == written.tobytes(), (read, written)


def assert_same_frame(read: Any, written: pd.DataFrame) -> None:
    assert isinstance(read, pd.DataFrame), type(read)
    # pandas compares complex NaNs with ==, which raises numpy's "invalid value" warning.
    with np.errstate(invalid="ignore"):
        pd.testing.assert_frame_equal(read, written, check_exact=True)
    # assert_frame_equal treats every NaN as equal; the bits must survive as well.
    for name in written.columns:
        assert read[name].to_numpy().tobytes() == written[name].to_numpy().tobytes(), name
    assert read.index.to_numpy().tobytes() == written.index.to_numpy().tobytes()


def assert_same_value(read: Any, written: Any) -> None:
    if isinstance(written, pd.DataFrame):
        assert_same_frame(read, written)
    else:
        assert_same_array(read, written)


def stacked(values: list[np.ndarray]) -> np.ndarray:
    """``values`` stacked in their own dtype (np.stack drops the byte order of empty arrays)."""
    return np.stack(values).astype(values[0].dtype, copy=False)


def stored_stack(pair: WriterHandlerPair, path: str, kwargs: dict[str, Any]) -> np.ndarray:
    """The whole stack as the format's own library reads the file (not through our handler)."""
    if pair.spec in ("BAS_HDF5", "BAS_TABLE_HDF5"):
        with h5py.File(path, "r") as file:
            return file[kwargs["dataset"]][...]
    if pair.spec == "BAS_NPY":
        return np.load(path)
    if pair.spec == "BAS_TIFF":
        with tifffile.TiffFile(path) as tiff:
            return np.stack([page.asarray() for page in tiff.pages])
    raise AssertionError(f"no reader for {pair.spec}")


def open_references(path: str | os.PathLike[str]) -> list[str]:
    """File descriptors and memory maps of this process that point at ``path`` (Linux)."""
    real = os.path.realpath(path)
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") == real:
                found.append(f"fd {fd}")
        except OSError:
            continue
    with open("/proc/self/maps") as maps:
        found += [line.strip() for line in maps if line.rstrip().endswith(real)]
    return found


needs_proc = pytest.mark.skipif(
    not os.path.exists("/proc/self/maps"), reason="needs Linux /proc to see open files"
)


# --------------------------------------------------------------------------------------------
# 1 + 6: round trip, and the file as the format's own library sees it


def test_registry_holds_the_four_pairs() -> None:
    assert set(SPECS) <= set(REGISTRY)
    for spec in SPECS:
        assert REGISTRY[spec].spec == spec
        assert REGISTRY.handler_registry()[spec] is REGISTRY[spec].handler


@pytest.mark.parametrize("spec", SPECS)
@PROPERTY_SETTINGS
@given(data=st.data())
def test_roundtrip_is_bit_exact(spec: str, data: st.DataObject, tmp_path: Path) -> None:
    pair = REGISTRY[spec]
    values = data.draw(VALUE_STACKS[spec], label="values")
    description = pair.describe(values[0])
    for value in values:
        assert pair.describe(value) == description
    with tempfile.TemporaryDirectory(dir=tmp_path) as directory:
        path = os.path.join(directory, "key" + pair.suffix)
        kwargs = _resource_kwargs(pair, values[0])
        datum_kwargs = _write(pair, path, kwargs, values)
        assert len({json.dumps(d, sort_keys=True) for d in datum_kwargs}) == len(values)

        read = _read(pair, path, kwargs, datum_kwargs)
        assert len(read) == len(values)
        for got, written in zip(read, values, strict=True):
            assert_same_value(got, written)

        # The descriptor promises what the handler gives back.
        if isinstance(values[0], pd.DataFrame):
            assert description.shape == (len(values[0]),)
        else:
            assert description.shape == values[0].shape
            assert description.numpy_dtype == values[0].dtype

        # The file itself holds the stack (n, *frame_shape) in the written dtype.
        stack = stored_stack(pair, path, kwargs)
        n = len(values)
        if isinstance(values[0], pd.DataFrame):
            assert stack.shape == (n, len(values[0]))
            assert stack.dtype == description.numpy_dtype
        else:
            expected = stacked(values)
            assert stack.shape == expected.shape
            # tifffile gives native byte order; a byte swap keeps every bit.
            assert stack.astype(expected.dtype).tobytes() == expected.tobytes()
            if spec != "BAS_TIFF":
                assert stack.dtype == expected.dtype
        if spec == "BAS_TIFF":
            image = tifffile.imread(path)
            # tifffile reads a one-page file as the bare 2-D image, not as a stack of one;
            # tiled's TiffAdapter force-reshapes reads to the structure the catalog declares.
            assert image.shape == (expected.shape if n > 1 else expected.shape[1:])
            assert image.astype(expected.dtype).tobytes() == expected.tobytes()


def _special_floats(dtype: np.dtype) -> np.ndarray:
    """A (2, 8) array of NaN payloads, infinities, -0.0 and a subnormal in ``dtype``."""
    width = dtype.itemsize if dtype.kind == "f" else dtype.itemsize // 2
    bits = np.array([int(h, 16) for h in SPECIAL_FLOAT_BITS[width]], dtype=f"u{width}")
    floats = bits.view(f"f{width}")
    if dtype.kind == "c":
        pairs = np.stack([floats, floats[::-1]], axis=-1).copy()  # real, imaginary
        floats = pairs.view(f"c{2 * width}")[..., 0]
    array = np.stack([floats, floats[::-1]]).astype(dtype)
    assert array.shape == (2, 8)
    return array


@pytest.mark.parametrize("spec", ARRAY_SPECS)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES + COMPLEX_DTYPES, ids=str)
def test_nan_payloads_and_infinities_survive(spec: str, dtype: np.dtype, tmp_path: Path) -> None:
    pair = REGISTRY[spec]
    values = [_special_floats(dtype), _special_floats(dtype)[::-1].copy()]
    assert np.isnan(values[0]).any()
    assert np.isinf(values[0]).any()
    path = str(tmp_path / ("key" + pair.suffix))
    kwargs = _resource_kwargs(pair, values[0])
    read = _read(pair, path, kwargs, _write(pair, path, kwargs, values))
    for got, written in zip(read, values, strict=True):
        assert_same_array(got, written)


@pytest.mark.parametrize(
    ("spec", "byteorder"),
    [
        pytest.param("BAS_HDF5", "native", id="BAS_HDF5-native"),
        pytest.param("BAS_HDF5", "swapped", id="BAS_HDF5-swapped"),
        pytest.param("BAS_NPY", "native", id="BAS_NPY-native"),
        pytest.param("BAS_NPY", "swapped", id="BAS_NPY-swapped"),
    ],
)
def test_zero_d_frames_roundtrip(spec: str, byteorder: str, tmp_path: Path) -> None:
    """Scalars (0-d frames) of every dtype of one byte order; failures listed per dtype.

    Regression: BAS_NPY once stored 0-d frames as shape (1,), and BAS_HDF5 returned big-endian
    0-d values in native byte order.
    """
    pair = REGISTRY[spec]
    dtypes = [d for d in ARRAY_DTYPES if d.isnative == (byteorder == "native")]
    assert len(dtypes) >= 11
    failures = []
    for dtype in dtypes:
        raw = [1, 0, 1] if dtype.kind == "b" else [3, 0, 7]
        values = [np.array(v, dtype=dtype) for v in raw]
        if dtype.kind in "fc":
            values[1] = np.array(np.nan, dtype=dtype)
        path = str(tmp_path / (dtype.str.replace("|", "_") + pair.suffix))
        kwargs = _resource_kwargs(pair, values[0])
        assert pair.describe(values[0]).shape == ()
        read = _read(pair, path, kwargs, _write(pair, path, kwargs, values))
        for got, written in zip(read, values, strict=True):
            try:
                assert_same_array(got, written)
            except AssertionError:
                failures.append(f"{dtype.str}: read {got.dtype.str} {got.shape}")
                break
        stack = stored_stack(pair, path, kwargs)
        if stack.shape != (len(values),) or stack.dtype != dtype:
            failures.append(f"{dtype.str}: file holds {stack.dtype.str} {stack.shape}")
    assert not failures, failures


@pytest.mark.parametrize(
    "table",
    [
        pd.DataFrame({"a": [1.0, 2.0, 3.0]}, index=[5, 6, 7]),
        pd.DataFrame({"a": [1.0, 2.0, 3.0, 4.0]}).iloc[1:],  # RangeIndex(1, 4)
    ],
    ids=["int-index", "sliced-range-index"],
)
def test_table_unnamed_index_roundtrip(table: pd.DataFrame, tmp_path: Path) -> None:
    """Regression: an unnamed non-default index once came back named 'index'."""
    pair = REGISTRY["BAS_TABLE_HDF5"]
    path = str(tmp_path / "key.h5")
    kwargs = _resource_kwargs(pair, table)
    (read,) = _read(pair, path, kwargs, _write(pair, path, kwargs, [table]))
    assert_same_frame(read, table)


@pytest.mark.parametrize(
    "name", ["\x00", "a\x00b", "\ud800"], ids=["nul", "inner-nul", "surrogate"]
)
def test_table_column_name_hdf5_cannot_hold(name: str, tmp_path: Path) -> None:
    """Regression: names HDF5 cannot hold (NUL, lone surrogates) are refused before writing.

    They once made the writer raise ValueError or UnicodeEncodeError, or silently cut 'a\\x00b'
    to 'a'.
    """
    pair = REGISTRY["BAS_TABLE_HDF5"]
    table = pd.DataFrame({name: [1, 2, 3]})
    with pytest.raises(UnsupportedValueError, match="without NUL characters"):
        pair.describe(table)
    # The writer checks each value too: nothing reaches the file.
    path = tmp_path / "key.h5"
    with pair.writer(str(path)) as writer, pytest.raises(UnsupportedValueError):
        writer(table)
    with h5py.File(path, "r") as file:
        assert list(file) == []


# --------------------------------------------------------------------------------------------
# 2: context managers, idempotent close


def _simple_values(spec: str) -> list[Any]:
    if spec == "BAS_TABLE_HDF5":
        return [
            pd.DataFrame({"x": np.arange(3.0) + i, "ok": [True, False, True]}) for i in range(3)
        ]
    return [np.arange(6, dtype=">i4").reshape(2, 3) * i for i in range(3)]


@needs_proc
@pytest.mark.parametrize("spec", SPECS)
def test_writer_and_handler_are_context_managers_with_idempotent_close(
    spec: str, tmp_path: Path
) -> None:
    pair = REGISTRY[spec]
    values = _simple_values(spec)
    path = str(tmp_path / ("key" + pair.suffix))
    kwargs = _resource_kwargs(pair, values[0])

    writer = pair.writer(path, **kwargs)
    with writer as entered:
        assert entered is writer
        datum_kwargs = [entered(v) for v in values]
        assert open_references(path), "an open writer should hold its file"
    assert open_references(path) == []
    writer.close()  # second close: no error, nothing changes
    before = Path(path).read_bytes()
    writer.close()
    assert Path(path).read_bytes() == before
    with pytest.raises(ValueError, match="closed"):
        writer(values[0])
    assert Path(path).read_bytes() == before

    handler = pair.handler(path, **kwargs)
    with handler as entered:
        assert entered is handler
        for d, written in zip(datum_kwargs, values, strict=True):
            assert_same_value(entered(**d), written)
    gc.collect()
    assert open_references(path) == []
    handler.close()
    handler.close()

    # A handler closed twice does not stop another one from reading the file.
    assert_same_value(_read(pair, path, kwargs, datum_kwargs[-1:])[0], values[-1])


@pytest.mark.parametrize("spec", SPECS)
def test_writer_closes_and_keeps_frames_when_the_with_block_raises(
    spec: str, tmp_path: Path
) -> None:
    pair = REGISTRY[spec]
    values = _simple_values(spec)
    path = str(tmp_path / ("key" + pair.suffix))
    kwargs = _resource_kwargs(pair, values[0])
    datum_kwargs: list[dict[str, Any]] = []

    def analysis_fails_after_two_values() -> None:
        with pair.writer(path, **kwargs) as writer:
            datum_kwargs.extend(writer(v) for v in values[:2])
            raise RuntimeError("analysis failed")

    with pytest.raises(RuntimeError, match="analysis failed"):
        analysis_fails_after_two_values()
    read = _read(pair, path, kwargs, datum_kwargs)
    for got, written in zip(read, values[:2], strict=True):
        assert_same_value(got, written)
    assert len(stored_stack(pair, path, kwargs)) == 2


# --------------------------------------------------------------------------------------------
# 3: no overwrite


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("existing", ["empty", "foreign-bytes", "earlier-resource"])
def test_writer_refuses_to_overwrite(spec: str, existing: str, tmp_path: Path) -> None:
    pair = REGISTRY[spec]
    values = _simple_values(spec)
    path = str(tmp_path / ("key" + pair.suffix))
    kwargs = _resource_kwargs(pair, values[0])
    if existing == "empty":
        Path(path).write_bytes(b"")
    elif existing == "foreign-bytes":
        Path(path).write_bytes(bytes(range(256)) * 8)
    else:
        datum_kwargs = _write(pair, path, kwargs, values[:2])
    before = Path(path).read_bytes()

    # FileExistsError, or another OSError that says the file exists.
    with pytest.raises(OSError, match=r"(?i)file exists"):
        pair.writer(path, **kwargs)
    assert Path(path).read_bytes() == before
    if existing == "earlier-resource":
        read = _read(pair, path, kwargs, datum_kwargs)
        for got, written in zip(read, values[:2], strict=True):
            assert_same_value(got, written)


# --------------------------------------------------------------------------------------------
# 4: one resource, one dtype and shape


@st.composite
def mismatched_arrays(
    draw: st.DrawFn, dtypes: list[np.dtype], shapes: st.SearchStrategy[tuple[int, ...]]
) -> tuple[list[np.ndarray], np.ndarray]:
    first = draw(array_stacks(dtypes, shapes))
    dtype = draw(st.sampled_from(dtypes))
    shape = draw(shapes)
    assume((dtype, shape) != (first[0].dtype, first[0].shape))
    return first[:3], draw(frames(dtype, shape))


@st.composite
def mismatched_tables(draw: st.DrawFn) -> tuple[list[pd.DataFrame], pd.DataFrame]:
    index_kind = draw(st.sampled_from(INDEX_KINDS))
    first = draw(table_stacks(index_kind))
    other = draw(table_stacks(index_kind))[0]
    assume(
        len(other) != len(first[0])
        or list(other.columns) != list(first[0].columns)
        or list(other.dtypes) != list(first[0].dtypes)
    )
    assume(other.index.name == first[0].index.name)
    return first[:3], other


MISMATCHES: dict[str, st.SearchStrategy[tuple[list[Any], Any]]] = {
    "BAS_HDF5": mismatched_arrays(ARRAY_DTYPES, hnp.array_shapes(min_dims=0, max_dims=3)),
    "BAS_NPY": mismatched_arrays(ARRAY_DTYPES, hnp.array_shapes(min_dims=0, max_dims=3)),
    "BAS_TIFF": mismatched_arrays(TIFF_DTYPES, FRAME_2D),
    "BAS_TABLE_HDF5": mismatched_tables(),
}


@pytest.mark.parametrize("spec", SPECS)
@settings(PROPERTY_SETTINGS, max_examples=40)
@given(data=st.data())
def test_writer_refuses_a_value_unlike_the_first(
    spec: str, data: st.DataObject, tmp_path: Path
) -> None:
    pair = REGISTRY[spec]
    firsts, other = data.draw(MISMATCHES[spec], label="firsts, other")
    with tempfile.TemporaryDirectory(dir=tmp_path) as directory:
        path = os.path.join(directory, "key" + pair.suffix)
        kwargs = _resource_kwargs(pair, firsts[0])
        with pair.writer(path, **kwargs) as writer:
            for value in firsts:
                writer(value)
            with pytest.raises(UnsupportedValueError) as excinfo:
                writer(other)
        message = str(excinfo.value)
        if isinstance(other, pd.DataFrame):
            wanted = [str((len(firsts[0]),)), str((len(other),))]
            wanted += [repr(name) for name in [*firsts[0].columns, *other.columns]]
        else:
            wanted = [str(firsts[0].shape), str(other.shape)]
            wanted += [str(firsts[0].dtype), str(other.dtype)]
        for text in wanted:
            assert text in message, (text, message)

        # The refused value left no trace: the file holds exactly the accepted frames.
        stack = stored_stack(pair, path, kwargs)
        assert len(stack) == len(firsts)
        if not isinstance(other, pd.DataFrame):
            expected = stacked(firsts)
            assert stack.astype(expected.dtype).tobytes() == expected.tobytes()


# --------------------------------------------------------------------------------------------
# 5: describe refuses what the format cannot hold, saying what it accepts


def _refusal(describe: Callable[[Any], Any], value: Any) -> str:
    with pytest.raises(UnsupportedValueError) as excinfo:
        describe(value)
    return str(excinfo.value)


@settings(PROPERTY_SETTINGS, max_examples=40)
@given(
    value=st.one_of(
        hnp.array_shapes(min_dims=0, max_dims=1, min_side=0, max_side=5)
        | hnp.array_shapes(min_dims=3, max_dims=4, min_side=0, max_side=3)
        | hnp.array_shapes(min_dims=2, max_dims=2, min_side=0, max_side=3).filter(
            lambda shape: 0 in shape
        )
    ).flatmap(lambda shape: hnp.arrays(st.sampled_from(TIFF_DTYPES), shape))
)
def test_tiff_describe_refuses_frames_that_are_not_non_empty_2d(value: np.ndarray) -> None:
    message = _refusal(REGISTRY["BAS_TIFF"].describe, value)
    assert "2-D" in message
    assert str(value.shape) in message


@pytest.mark.parametrize("shape", [(3, 4), (2, 3, 4), (5,)])
def test_tiff_describe_refuses_bool(shape: tuple[int, ...]) -> None:
    message = _refusal(REGISTRY["BAS_TIFF"].describe, np.zeros(shape, dtype=bool))
    assert "bool" in message
    for accepted in ("signed integers", "unsigned integers", "floats", "complex"):
        assert accepted in message


@pytest.mark.parametrize("spec", ["BAS_HDF5", "BAS_NPY"])
@pytest.mark.parametrize(
    "value",
    [
        np.array(["a", "bc"]),
        np.array([b"a", b"bc"]),
        np.array([{"a": 1}, None], dtype=object),
        np.zeros(3, dtype=[("x", "<f8"), ("y", "<i4")]),
    ],
    ids=["unicode", "bytes", "object", "structured"],
)
def test_array_describe_refuses_non_numeric(spec: str, value: np.ndarray) -> None:
    message = _refusal(REGISTRY[spec].describe, value)
    assert str(value.dtype) in message
    for accepted in ("bool", "signed integers", "unsigned integers", "floats", "complex"):
        assert accepted in message


@pytest.mark.parametrize(
    ("value", "says"),
    [
        (np.zeros((3, 2)), ["DataFrame", "ndarray"]),
        ({"x": [1, 2]}, ["DataFrame", "dict"]),
        (pd.Series([1.0, 2.0]), ["DataFrame", "Series"]),
        (pd.DataFrame({"x": [1.0], "s": ["text"]}), ["'s'", "numeric or bool"]),
        (pd.DataFrame({"x": [1.0], "o": [{"a": 1}]}), ["'o'", "numeric or bool"]),
        (pd.DataFrame({"s": pd.array(["t"], dtype="string")}), ["'s'", "numeric or bool"]),
        (pd.DataFrame([[1, 2]], columns=["a", "a"]), ["unique", "'a'"]),
        (pd.DataFrame([[1, 2]], columns=["a", 7]), ["strings", "7"]),
        (pd.DataFrame({"": [1]}), ["non-empty"]),
        (pd.DataFrame({"a": [1]}, index=pd.Index(["p"], name="k")), ["index", "numeric"]),
    ],
    ids=[
        "ndarray",
        "dict",
        "series",
        "str-column",
        "object-column",
        "string-dtype-column",
        "duplicate-names",
        "non-str-name",
        "empty-name",
        "str-index",
    ],
)
def test_table_describe_refuses(value: Any, says: list[str]) -> None:
    message = _refusal(REGISTRY["BAS_TABLE_HDF5"].describe, value)
    for text in says:
        assert text in message, (text, message)


@pytest.mark.parametrize("frame_shape", [(0,), (0, 64, 64), (512, 512), ()])
def test_hdf5_chunks_stay_near_one_mebibyte(frame_shape: tuple[int, ...], tmp_path: Path) -> None:
    """Regression: a zero-length axis once sized the chunk as if a frame were 0 bytes (32 GiB)."""
    pair = REGISTRY["BAS_HDF5"]
    value = np.zeros(frame_shape, dtype="f8")
    path = str(tmp_path / "key.h5")
    kwargs = _resource_kwargs(pair, value)
    _write(pair, path, kwargs, [value, value])
    with h5py.File(path, "r") as f:
        chunks = f[kwargs["dataset"]].chunks
    # a chunk of at most chunk_shape frames, and no more frames than were written
    assert chunks[0] == min(kwargs["chunk_shape"][0], 2)
    assert 8 * math.prod(chunks) <= 2 * (1 << 20)
