"""What a value looks like to an event descriptor: JSON dtype, numpy dtype and shape."""

from __future__ import annotations

import math
import numbers
import reprlib
import sys
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._errors import NestingTooDeepError, UnsupportedValueError

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
    dims : tuple of str
        Names of the value's dimensions (the descriptor's ``dims``), or ``()`` when unnamed.
        tiled's TiledWriter gives them to the array it serves (after its ``time``).
    table_index : (str, str or None) or None
        For a table with a stored index: the field that holds it and the index's own name
        (None for an unnamed index). Goes into the data key as ``table_index``, so a reader
        with nothing but the run can rebuild the DataFrame (see ``records_to_dataframe``).
    """

    dtype: str
    dtype_numpy: str | list[list[str]]
    shape: tuple[int, ...]
    dims: tuple[str, ...] = ()
    table_index: tuple[str, str | None] | None = None

    @property
    def numpy_dtype(self) -> np.dtype:
        """The numpy dtype, structured when ``dtype_numpy`` is a field list."""
        if isinstance(self.dtype_numpy, list):
            return np.dtype([tuple(field) for field in self.dtype_numpy])
        return np.dtype(self.dtype_numpy)

    def summary(self) -> str:
        """``dtype ... and shape ...`` (and the table index, if any), for messages."""
        text = f"dtype {self.dtype_numpy} and shape {self.shape}"
        if self.table_index is not None:
            field, name = self.table_index
            text += f" with the index in field {field!r} ({'named' if name else 'unnamed'})"
        return text

    def as_data_key(self, source: str) -> dict[str, Any]:
        """Return this description as an event-model ``DataKey`` dict."""
        data_key: dict[str, Any] = {
            "source": source,
            "dtype": self.dtype,
            "dtype_numpy": self.dtype_numpy,
            "shape": list(self.shape),
        }
        if self.dims:
            data_key["dims"] = list(self.dims)
        if self.table_index is not None:
            field, name = self.table_index
            data_key["table_index"] = {"field": field, "name": name}
        return data_key


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


def is_dataframe(value: Any) -> bool:
    """Whether ``value`` is a pandas DataFrame, without importing pandas when nobody has.

    Nobody can hold a DataFrame unless pandas is already imported, so the check looks it up in
    ``sys.modules`` and costs nothing on the paths that never see a table.
    """
    pandas = sys.modules.get("pandas")
    return pandas is not None and isinstance(value, pandas.DataFrame)


def to_json_value(value: Any) -> Any:
    """Convert an inline value to the plain JSON value an event document carries."""
    if isinstance(value, np.ndarray | np.generic):
        return value.tolist()
    return value


#: The largest integer JSON readers keep exactly; tiled's TiledWriter clamps metadata beyond it.
JSON_SAFE_INTEGER = 2**53 - 1


#: How deeply mappings and lists may nest in a document, counted from its top (the document
#: itself is level 1; ``md`` is merged into the start document's top, so its levels count the
#: same). tiled's TiledWriter stores up to about 250 (its JSON encoder, orjson, stops at 254
#: with the run's own wrapping) and event-model's schema validation takes four Python frames
#: per level (Python's default recursion limit is 1000); 128 leaves room for the callers' stack.
MAX_DEPTH = 128

#: Leaf types decided without looking inside them.
PLAIN_SCALARS = frozenset({int, float, str, bool, type(None)})
_NUMBERS = frozenset({int, float, bool})


def _items(value: Any) -> Iterator[tuple[Any, Any]] | None:
    """A container's ``(name, item)`` pairs, or None for a leaf."""
    if isinstance(value, Mapping):
        return iter(value.items())
    if isinstance(value, list | tuple):
        return enumerate(value)
    return None


def _values(container: Any) -> Collection[Any]:
    return container.values() if isinstance(container, Mapping) else container


def all_plain(values: Collection[Any]) -> bool:
    """Whether every item of ``values`` is a plain scalar (:data:`PLAIN_SCALARS`; checked in C)."""
    return PLAIN_SCALARS.issuperset(map(type, values))


_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 60


def short_repr(value: Any, limit: int = 80) -> str:
    """``repr(value)`` cut to about ``limit`` characters, safe for deep or huge containers
    (``f"{value!r:.80}"`` builds the whole repr first, and recurses)."""
    text = _REPR.repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _path(where: str, names: list[Any]) -> str:
    """``where[name][name]...``, the middle left out when it is long."""
    parts = [f"[{short_repr(name, 40)}]" for name in names]
    if len(parts) > 12:
        parts = [*parts[:6], f"[… {len(parts) - 10} more levels …]", *parts[-4:]]
    return where + "".join(parts)


def find_in_tree(
    value: Any,
    where: str,
    *,
    leaf: Callable[[Any], bool] | None = None,
    key: Callable[[Any], bool] | None = None,
    above: int = 0,
    plain_clear: Callable[[Collection[Any]], bool] | None = None,
) -> str | None:
    """Where, in a JSON-like tree (mappings, lists, tuples), the first leaf for which
    ``leaf(value)`` holds or the first mapping key for which ``key(k)`` holds is; or None.

    The walk is iterative (no recursion, whatever the depth) and refuses a tree that nests
    deeper than :data:`MAX_DEPTH` levels, counting ``above`` levels that hold ``value`` in its
    document (a cycle is refused the same way). A container holding only plain scalars (an
    event page's column) is skipped whole when there is no ``leaf`` and no ``key``, or when
    ``plain_clear(its values)`` says no ``leaf`` can hold inside it (a check in C, say).

    Raises
    ------
    NestingTooDeepError
        Naming the key path that goes too deep.
    """
    top = _items(value)
    if top is None:
        return where if leaf is not None and leaf(value) else None
    limit = MAX_DEPTH - above
    # one frame per open container: its remaining items, whether it is a mapping
    stack: list[tuple[Iterator[tuple[Any, Any]], bool]] = [(top, isinstance(value, Mapping))]
    names: list[Any] = []  # the path to the container on top of the stack
    while stack:
        items, is_mapping = stack[-1]
        for name, item in items:
            if is_mapping and key is not None and key(name):
                return f"the key {short_repr(name, 40)} of {_path(where, names)}"
            children = None if type(item) in PLAIN_SCALARS else _items(item)
            if children is not None:
                names.append(name)
                if len(stack) >= limit:
                    raise NestingTooDeepError(
                        f"{_path(where, names)} nests mappings and lists more than {MAX_DEPTH} "
                        "levels deep in its document (tiled and event-model cannot store or "
                        "check deeper trees); flatten it, or store it as a JSON string"
                    )
                if (
                    key is None
                    and (leaf is None or plain_clear is not None)
                    and all_plain(values := _values(item))
                    and (plain_clear is None or plain_clear(values))
                ):
                    names.pop()  # an event page's column: nothing to find inside (fast path)
                    continue
                stack.append((children, isinstance(item, Mapping)))
                break
            if leaf is not None and leaf(item):
                return _path(where, [*names, name])
        else:
            stack.pop()
            if names:
                names.pop()
    return None


def check_depth(tree: Any, where: str, *, above: int = 0) -> None:
    """Refuse a JSON-like tree nested deeper than :data:`MAX_DEPTH` levels (or a cycle).

    Call it before any recursive walk (``json``, ``copy.deepcopy``, schema validation) sees
    the tree. It walks every item once, without recursion.

    Parameters
    ----------
    tree : mapping, list or leaf
        A document, ``md``, or a part of a document.
    where : str
        How the error names ``tree`` (``"md"``, ``"start document 'abc…'"``).
    above : int
        How many levels of its document hold ``tree`` (0 for a document itself or for ``md``;
        2 for a start document's ``provenance.parameters``).

    Raises
    ------
    NestingTooDeepError
        Naming the key path that goes too deep.
    """
    find_in_tree(tree, where, above=above)


def _nonfinite(value: Any) -> bool:
    if isinstance(value, float | np.floating):
        return not math.isfinite(value)
    if isinstance(value, np.ndarray):
        return value.dtype.kind in "fc" and not np.isfinite(value).all()
    return False


def _plain_all_finite(values: Collection[Any]) -> bool:
    """Whether plain scalars hold no NaN or infinity, in C for the usual numeric column (a mix
    with strings or None answers False: the walk then looks item by item)."""
    types = set(map(type, values))
    if float not in types:
        return True
    return types <= _NUMBERS and all(map(math.isfinite, values))


def find_nonfinite(value: Any, where: str, *, above: int = 0) -> str | None:
    """Where NaN or infinity (a float, numpy scalar or array) hides in a JSON-like tree, or None.

    Also refuses a tree nested too deep, as :func:`check_depth` does, in the same walk.

    Raises
    ------
    NestingTooDeepError
        Naming the key path that goes too deep.
    """
    return find_in_tree(value, where, leaf=_nonfinite, above=above, plain_clear=_plain_all_finite)


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
