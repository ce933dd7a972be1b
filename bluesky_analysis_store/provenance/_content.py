"""The content hash of an analysis run: what it holds, beside the lineage hash (who made it).

Two saves of one lineage (same analysis, version, parameters, parents and inputs) should hold
the same data. When they do not, the analysis changed without a new version (strax's lesson:
versions bumped by hand are often forgotten), and returning the first run would silently drop
the second result. The content hash tells the two cases apart.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from ..core._values import all_plain, is_dataframe
from ._provenance import canonical_json

#: Arrays at least this big are hashed through a memoryview instead of a bytes copy.
_VIEW_BYTES = 1 << 20


def _frame(digest: Any, tag: bytes, payload: bytes | memoryview) -> None:
    """One self-delimiting piece: tag, length, bytes (so no two sequences collide)."""
    digest.update(tag + len(payload).to_bytes(8, "little"))
    digest.update(payload)


def _update_array(digest: Any, array: np.ndarray) -> None:
    if array.dtype.kind == "O":  # pointers: hash what they point to
        _frame(digest, b"O", json.dumps(array.tolist(), default=repr).encode())
        return
    _frame(digest, b"A", canonical_json([array.dtype.str, list(array.shape)]).encode())
    contiguous = np.ascontiguousarray(array)
    if contiguous.nbytes >= _VIEW_BYTES:
        _frame(digest, b"B", contiguous.reshape(-1).data.cast("B"))
    else:
        _frame(digest, b"B", contiguous.tobytes())


def update_value(digest: Any, value: Any) -> None:
    """Feed one data value (number, string, numpy array or scalar, DataFrame) to ``digest``.

    Equal values give equal bytes; values that read back differently (``1`` and ``1.0``, two
    dtypes, two shapes) do not.
    """
    if is_dataframe(value):
        names = [str(name) for name in value.columns] + [str(n) for n in value.index.names]
        _frame(digest, b"D", json.dumps(names).encode())
        _update_array(digest, value.index.to_numpy())
        for column in value.columns:
            _update_array(digest, value[column].to_numpy())
    elif isinstance(value, np.ndarray | np.generic):
        _update_array(digest, np.asarray(value))
    else:
        text = json.dumps([type(value).__name__, value], default=repr)
        _frame(digest, b"J", text.encode())


def content_hash(
    metadata: Mapping[str, Any],
    streams: Mapping[str, Iterable[Mapping[str, Any]]],
    placement: Mapping[str, Mapping[str, str | None]],
    asset_form: str,
) -> str:
    """SHA-256 of a run's content: its metadata (without provenance), every value of every
    stream in order, which pair (if any) writes each key, and the document form.

    Parameters
    ----------
    metadata : mapping
        The start document's own metadata (``md`` and the sample packet; no provenance, uid or
        time).
    streams : mapping
        ``{stream: [{data_key: value}, ...]}`` in event order.
    placement : mapping
        ``{stream: {data_key: spec name, or None for a value inside the events}}``.
    asset_form : str
        ``"stream_resource"`` or ``"resource"``.
    """
    digest = hashlib.sha256()
    _frame(digest, b"M", canonical_json(dict(metadata)).encode())
    _frame(digest, b"F", asset_form.encode())
    for stream, entries in streams.items():
        entries = list(entries)
        _frame(
            digest, b"S", canonical_json([stream, dict(placement[stream]), len(entries)]).encode()
        )
        # column by column: every entry of a stream has the same keys (checked while planning)
        for key in sorted(entries[0]):
            _frame(digest, b"K", key.encode())
            _update_column(digest, [entry[key] for entry in entries])
    return digest.hexdigest()


def _update_column(digest: Any, values: list[Any]) -> None:
    """One key's values in event order; plain scalars in one piece, the rest one by one."""
    if all_plain(values):
        _frame(digest, b"C", json.dumps([[type(v).__name__, v] for v in values]).encode())
        return
    for value in values:
        update_value(digest, value)
