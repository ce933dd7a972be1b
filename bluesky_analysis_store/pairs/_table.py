"""Tables: pandas DataFrame values stored as a stack of HDF5 compound (structured) arrays.

One file per (stream, key) per run; each value is one frame of ``nrows`` records whose fields are
the columns (and the index, when it carries information). The descriptor's ``dtype_numpy`` is the
structured dtype, so tiled serves the stack as a structured array and every column keeps its dtype.

The data key also says which field is the index, so that a reader with nothing but tiled can
rebuild the DataFrame: ``table_index: {"field": FIELD, "name": NAME or null}`` and
``dims: [FIELD]`` (tiled's array then has dims ``("time", FIELD)``). A default ``RangeIndex``
is not stored, and the data key has neither.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from ..core._errors import UnsupportedValueError
from ..core._values import NUMERIC_KINDS, ValueDescription, is_dataframe
from ._hdf5 import HDF5Handler, HDF5Writer, annotate_hdf5, hdf5_resource_kwargs
from ._pairs import WriterHandlerPair

DEFAULT_INDEX_NAME = "index"


def _has_default_index(frame: pd.DataFrame) -> bool:
    index = frame.index
    return (
        isinstance(index, pd.RangeIndex)
        and index.start == 0
        and index.step == 1
        and index.name is None
    )


def _is_field_name(name: object) -> bool:
    if not isinstance(name, str) or not name or "\x00" in name:
        return False
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates
        return False
    return True


def _index_field(frame: pd.DataFrame) -> str | None:
    """The field name that stores the index, or None for a default RangeIndex (not stored)."""
    if _has_default_index(frame):
        return None
    return str(frame.index.name) if frame.index.name is not None else DEFAULT_INDEX_NAME


def _records(frame: pd.DataFrame, index: str | None) -> np.ndarray:
    if index is None:
        return frame.to_records(index=False)
    return frame.rename_axis(index).to_records(index=True)


def describe_table_value(value: Any) -> ValueDescription:
    """A DataFrame with unique string column names and numeric or bool columns."""
    if not is_dataframe(value):
        raise UnsupportedValueError(
            f"the table writer takes pandas DataFrames, got {type(value).__name__}"
        )
    names = list(value.columns)
    bad_names = [n for n in names if not _is_field_name(n)]
    if bad_names or len(set(names)) != len(names):
        raise UnsupportedValueError(
            "table columns must be unique non-empty UTF-8 strings without NUL characters "
            f"(HDF5 field names); got {names}"
        )
    for name, dtype in value.dtypes.items():
        if not isinstance(dtype, np.dtype) or dtype.kind not in NUMERIC_KINDS:
            raise UnsupportedValueError(
                f"column {name!r} has dtype {dtype}; table columns must be numeric or bool "
                "numpy dtypes (ints, unsigned, floats, complex, bool)"
            )
    index = _index_field(value)
    if index is not None:
        if index in names:
            raise UnsupportedValueError(
                f"the index name {index!r} is also a column name; rename one of them"
            )
        if not isinstance(value.index.dtype, np.dtype) or value.index.dtype.kind not in (
            NUMERIC_KINDS
        ):
            raise UnsupportedValueError(
                f"the index has dtype {value.index.dtype}; a stored index must be numeric"
            )
    dtype = _records(value, index).dtype
    descr = [[name, dtype[name].str] for name in dtype.names or ()]
    if index is None:
        return ValueDescription("array", descr, (len(value),))
    name = None if value.index.name is None else index
    return ValueDescription("array", descr, (len(value),), dims=(index,), table_index=(index, name))


class TableWriter(HDF5Writer):
    """Append DataFrames (equal columns, dtypes and row count) to one HDF5 compound stack.

    Parameters
    ----------
    resource_path : str
        The file to create; it must not exist.
    dataset, chunk_shape, compression
        As for :class:`~bluesky_analysis_store.HDF5Writer`.
    index : str or None
        The field that holds the DataFrame index, or None when the index is the default
        ``RangeIndex`` and is not stored.
    index_named : bool
        False when the index had no name (it is stored under ``"index"`` and read back unnamed).
    """

    def __init__(
        self,
        resource_path: str,
        *,
        dataset: str = "/table",
        chunk_shape: list[int] | None = None,
        compression: str | None = None,
        index: str | None = None,
        index_named: bool = True,
    ) -> None:
        super().__init__(
            resource_path, dataset=dataset, chunk_shape=chunk_shape, compression=compression
        )
        self._index = index

    def __call__(self, value: Any) -> dict[str, Any]:
        describe_table_value(value)
        return super().__call__(_records(value, self._index).view(np.ndarray))


class TableHandler(HDF5Handler):
    """Read one DataFrame back from a stack written by :class:`TableWriter`."""

    def __init__(
        self,
        resource_path: str,
        *,
        dataset: str = "/table",
        chunk_shape: list[int] | None = None,
        compression: str | None = None,
        index: str | None = None,
        index_named: bool = True,
    ) -> None:
        super().__init__(resource_path, dataset=dataset)
        self._index = index
        self._index_named = index_named

    def __call__(self, *, point_number: int) -> pd.DataFrame:  # type: ignore[override]
        records = super().__call__(point_number=point_number)
        return records_to_dataframe(records, index=self._index, index_named=self._index_named)


def records_to_dataframe(
    records: np.ndarray,
    index: str | None = None,
    index_named: bool = True,
    *,
    data_key: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """Turn one structured frame (as read by the handler or tiled) back into a DataFrame.

    Parameters
    ----------
    records : numpy structured array
        One frame of the table stack.
    index, index_named
        The resource kwargs of the same names: which field is the index, and whether it had a
        name.
    data_key : mapping, optional
        The key's entry in its descriptor's ``data_keys`` (from tiled:
        ``run[stream].metadata["data_keys"][key]``); its ``table_index`` says which field is
        the index and its name. Given, it replaces ``index`` and ``index_named``.

    Examples
    --------
    Read a table back through tiled alone, index included:

    >>> stream = run["primary"]  # doctest: +SKIP
    >>> records_to_dataframe(  # doctest: +SKIP
    ...     stream["peaks"].read()[0], data_key=stream.metadata["data_keys"]["peaks"]
    ... )
    """
    if data_key is not None:
        table_index = data_key.get("table_index")
        index = None if table_index is None else table_index["field"]
        index_named = table_index is not None and table_index["name"] is not None
    frame = pd.DataFrame.from_records(records)
    if index is None:
        return frame
    frame = frame.set_index(index)
    return frame if index_named else frame.rename_axis(None)


def table_resource_kwargs(value: Any, description: ValueDescription) -> dict[str, Any]:
    return {
        **hdf5_resource_kwargs(value, description),
        "dataset": "/table",
        "index": _index_field(value),
        "index_named": value.index.name is not None,
    }


TABLE_PAIR = WriterHandlerPair(
    spec="BAS_TABLE_HDF5",
    mimetype="application/x-hdf5",
    writer=TableWriter,
    handler=TableHandler,
    suffix=".h5",
    describe=describe_table_value,
    resource_kwargs=table_resource_kwargs,
    annotate=annotate_hdf5,
)
