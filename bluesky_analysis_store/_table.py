"""Tables: pandas DataFrame values stored as a stack of HDF5 compound (structured) arrays.

One file per (stream, key) per run; each value is one frame of ``nrows`` records whose fields are
the columns (and the index, when it carries information). The descriptor's ``dtype_numpy`` is the
structured dtype, so tiled serves the stack as a structured array and every column keeps its dtype.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ._errors import UnsupportedValueError
from ._hdf5 import HDF5Handler, HDF5Writer, hdf5_resource_kwargs
from ._pairs import WriterHandlerPair
from ._values import NUMERIC_KINDS, ValueDescription

DEFAULT_INDEX_NAME = "index"


def _has_default_index(frame: pd.DataFrame) -> bool:
    index = frame.index
    return (
        isinstance(index, pd.RangeIndex)
        and index.start == 0
        and index.step == 1
        and index.name is None
    )


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
    if not isinstance(value, pd.DataFrame):
        raise UnsupportedValueError(
            f"the table writer takes pandas DataFrames, got {type(value).__name__}"
        )
    names = list(value.columns)
    bad_names = [n for n in names if not isinstance(n, str) or not n]
    if bad_names or len(set(names)) != len(names):
        raise UnsupportedValueError(f"table columns must be unique non-empty strings; got {names}")
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
    return ValueDescription("array", descr, (len(value),))


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
    """

    def __init__(
        self,
        resource_path: str,
        *,
        dataset: str = "/table",
        chunk_shape: list[int] | None = None,
        compression: str | None = None,
        index: str | None = None,
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
    ) -> None:
        super().__init__(resource_path, dataset=dataset)
        self._index = index

    def __call__(self, *, point_number: int) -> pd.DataFrame:  # type: ignore[override]
        records = super().__call__(point_number=point_number)
        return records_to_dataframe(records, index=self._index)


def records_to_dataframe(records: np.ndarray, index: str | None = None) -> pd.DataFrame:
    """Turn one structured frame (as read by the handler or tiled) back into a DataFrame."""
    frame = pd.DataFrame.from_records(records)
    return frame.set_index(index) if index is not None else frame


def table_resource_kwargs(value: Any, description: ValueDescription) -> dict[str, Any]:
    index = _index_field(value)
    return {**hdf5_resource_kwargs(value, description), "dataset": "/table", "index": index}


TABLE_PAIR = WriterHandlerPair(
    spec="BAS_TABLE_HDF5",
    mimetype="application/x-hdf5",
    writer=TableWriter,
    handler=TableHandler,
    suffix=".h5",
    describe=describe_table_value,
    resource_kwargs=table_resource_kwargs,
)
