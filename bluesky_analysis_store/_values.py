"""What a value looks like to an event descriptor: JSON dtype, numpy dtype and shape."""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._errors import UnsupportedValueError

# numpy dtype kinds: b bool, i int, u unsigned, f float, c complex
NUMERIC_KINDS = frozenset("biufc")


@dataclass(frozen=True)
class ValueDescription:
    """The descriptor-facing shape of one value (one data key in one event).

    Attributes
    ----------
    dtype : str
        The event-model JSON type: ``number``, ``integer``, ``boolean``, ``string`` or ``array``.
    dtype_numpy : str or list
        ``numpy.dtype.str`` (e.g. ``"<f4"``), or a structured dtype's ``descr`` as lists.
    shape : tuple of int
        The value's shape (``()`` for a scalar).
    """

    dtype: str
    dtype_numpy: str | list[list[str]]
    shape: tuple[int, ...]

    @property
    def numpy_dtype(self) -> np.dtype:
        """The numpy dtype, structured when ``dtype_numpy`` is a field list."""
        if isinstance(self.dtype_numpy, list):
            return np.dtype([tuple(field) for field in self.dtype_numpy])
        return np.dtype(self.dtype_numpy)

    def as_data_key(self, source: str) -> dict[str, Any]:
        """Return this description as an event-model ``DataKey`` dict."""
        return {
            "source": source,
            "dtype": self.dtype,
            "dtype_numpy": self.dtype_numpy,
            "shape": list(self.shape),
        }


def _json_type(dtype: np.dtype) -> str:
    if dtype.kind == "b":
        return "boolean"
    if dtype.kind in "iu":
        return "integer"
    if dtype.kind in "fc":
        return "number"
    if dtype.kind in "US":
        return "string"
    return "array"


def describe_array(value: Any, *, kinds: frozenset[str] = NUMERIC_KINDS) -> ValueDescription:
    """Describe a numpy array (or numpy scalar) whose dtype kind is one of ``kinds``.

    Raises
    ------
    UnsupportedValueError
        If ``value`` is not array-like or its dtype kind is not accepted.
    """
    if not isinstance(value, np.ndarray | np.generic):
        raise UnsupportedValueError(f"expected a numpy array, got {type(value).__name__}")
    arr = np.asarray(value)
    if arr.dtype.kind not in kinds or arr.dtype.names is not None:
        accepted = ", ".join(sorted(_KIND_NAMES[k] for k in kinds))
        raise UnsupportedValueError(f"dtype {arr.dtype} is not supported; accepted: {accepted}")
    json_type = "array" if arr.ndim else _json_type(arr.dtype)
    return ValueDescription(json_type, arr.dtype.str, tuple(arr.shape))


_KIND_NAMES = {
    "b": "bool",
    "i": "signed integers",
    "u": "unsigned integers",
    "f": "floats",
    "c": "complex",
    "U": "unicode strings",
    "S": "byte strings",
}


def describe_numeric(value: Any) -> ValueDescription:
    """Any numeric or bool array, numpy scalar or Python number (HDF5 and NPY hold them all)."""
    if isinstance(value, bool | int | float | complex):
        value = np.asarray(value)
    return describe_array(value)


def describe_inline(value: Any) -> ValueDescription:
    """Describe a value that travels inside the event document itself.

    Accepted: ``bool``, ``int``, ``float`` (finite), ``str``, numpy scalars and numeric numpy
    arrays (finite floats). NaN and infinity are refused because they are not valid JSON.

    Raises
    ------
    UnsupportedValueError
        If the value cannot be represented in JSON.
    """
    if isinstance(value, bool | np.bool_):
        return ValueDescription("boolean", "|b1", ())
    if isinstance(value, str):
        return ValueDescription("string", "<U0", ())
    if isinstance(value, numbers.Integral):
        if _beyond_int64(value):
            raise UnsupportedValueError(
                f"{value} does not fit a 64-bit signed integer, the widest an event table holds; "
                "give it as a string or a float"
            )
        return ValueDescription("integer", np.asarray(value).dtype.str, ())
    if isinstance(value, numbers.Real):
        if not math.isfinite(float(value)):
            raise UnsupportedValueError(
                f"{value!r} is not finite and cannot be stored in JSON; "
                "write it to a file with a writer (e.g. 'BAS_HDF5') or replace it"
            )
        return ValueDescription("number", np.asarray(value).dtype.str, ())
    if isinstance(value, np.ndarray):
        description = describe_array(value, kinds=frozenset("biuf"))
        if value.dtype == np.uint64 and value.size and int(value.max()) > INT64_RANGE[1]:
            raise UnsupportedValueError(
                f"array holds {int(value.max())}, which does not fit a 64-bit signed integer, "
                "the widest an event table holds; write it to a file with a writer (e.g. "
                "'BAS_HDF5')"
            )
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            raise UnsupportedValueError(
                "array holds NaN or infinity, which JSON cannot carry; "
                "write it to a file with a writer (e.g. 'BAS_HDF5')"
            )
        return description
    raise UnsupportedValueError(
        f"a value of type {type(value).__name__} cannot be stored inside an event; accepted: "
        "bool, int, float, str, numpy scalars and numeric arrays (or name a writer for the key)"
    )


def to_json_value(value: Any) -> Any:
    """Convert an inline value to the plain JSON value an event document carries."""
    if isinstance(value, np.ndarray | np.generic):
        return value.tolist()
    return value


#: The largest integer JSON readers keep exactly; tiled's TiledWriter clamps metadata beyond it.
JSON_SAFE_INTEGER = 2**53 - 1


def find_in_tree(
    value: Any,
    where: str,
    *,
    leaf: Callable[[Any], bool] | None = None,
    key: Callable[[Any], bool] | None = None,
) -> str | None:
    """Where, in a JSON-like tree (mappings, lists, tuples), the first leaf for which
    ``leaf(value)`` holds or the first mapping key for which ``key(k)`` holds is; or None."""
    if isinstance(value, Mapping):
        for name, item in value.items():
            if key is not None and key(name):
                return f"the key {name!r:.40} of {where}"
            if (found := find_in_tree(item, f"{where}[{name!r}]", leaf=leaf, key=key)) is not None:
                return found
        return None
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            if (found := find_in_tree(item, f"{where}[{index}]", leaf=leaf, key=key)) is not None:
                return found
        return None
    return where if leaf is not None and leaf(value) else None


def _beyond_json_integer(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        return False
    whole = isinstance(value, int | np.integer) or (math.isfinite(value) and value % 1 == 0)
    return whole and abs(int(value)) > JSON_SAFE_INTEGER


#: The integers tiled's event tables hold (64-bit signed); TiledWriter fails at the stop on others.
INT64_RANGE = (-(2**63), 2**63 - 1)


def _beyond_int64(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        return False
    return not INT64_RANGE[0] <= int(value) <= INT64_RANGE[1]


def beyond_int64(value: Any, where: str) -> str | None:
    """Where an integer outside the 64-bit signed range hides in a JSON-like tree, or None."""
    return find_in_tree(value, where, leaf=_beyond_int64)


def beyond_json_integers(value: Any, where: str) -> str | None:
    """Where an integer (or a whole float) beyond ±(2**53 − 1) hides in a JSON-like tree, or
    None. tiled's TiledWriter silently clamps such numbers in run metadata, so a start document
    carrying one would read back changed."""
    return find_in_tree(value, where, leaf=_beyond_json_integer)
