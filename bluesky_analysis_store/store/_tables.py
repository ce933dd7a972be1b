"""A run's scalar table (its event table) in one request.

TiledWriter writes a stream's scalar data keys as one table node, ``RUN/STREAM/internal``
(``seq_num``, ``time``, one column per key and ``ts_KEY`` timestamps); arrays and external
files are nodes of their own. Through tiled's client, ``store[uid][stream].read()`` takes six
requests for a stream of scalars (the run, the stream, the stream's listing twice, the table's
metadata, its partition; nine with an external array), and ``store[uid][stream][key].read()``
six per key (four with the stream node kept: the listing twice, the column's metadata, its
data). :func:`scalar_table` asks tiled's ``/table/full`` route for the
whole table, as Arrow, in one request. A stream without that node (only arrays, or a table
TiledWriter split in parts for having more than 1,024 columns) is read through the client.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from ..core._errors import NotFoundError

#: The node TiledWriter writes a stream's scalar columns to (bluesky-tiled-plugins).
TABLE_KEY = "internal"


def scalar_table(runs: Any, uid: str, stream: str = "primary", *, timestamps: bool = False) -> Any:
    """Stream ``stream`` of run ``uid`` (a full uid) as a ``pandas.DataFrame`` of its scalar
    data keys, one row per event, with ``seq_num`` and ``time`` (and each key's ``ts_KEY``
    timestamp if ``timestamps``).

    Raises
    ------
    KeyError
        If the run or the stream does not exist.
    """
    from tiled.client.utils import handle_error
    from tiled.serialization.table import deserialize_arrow
    from tiled.utils import APACHE_ARROW_FILE_MIME_TYPE

    context = runs.context
    parts = (*(p for p in runs.path_parts if p), uid, stream, TABLE_KEY)
    path = "/".join(quote(part, safe="") for part in parts)
    response = context.http_client.get(
        f"{context.api_uri}table/full/{path}", headers={"Accept": APACHE_ARROW_FILE_MIME_TYPE}
    )
    if response.status_code == 404:  # no such run or stream, or no single scalar table
        table = _through_the_client(runs, uid, stream)
    else:
        handle_error(response)
        table = deserialize_arrow(response.read())
    if not timestamps:
        table = table[[column for column in table.columns if not column.startswith("ts_")]]
    return table


def _through_the_client(runs: Any, uid: str, stream: str) -> Any:
    """The stream's table parts (``internal``, or ``internal_0``, ``internal_1``, ... side by
    side) read with tiled's client; no part: no scalar keys, an empty table."""
    import pandas as pd

    try:
        node = runs[uid][stream]
    except KeyError:
        raise NotFoundError(f"no stream {stream!r} in run {uid} (or no such run)") from None
    base = getattr(node, "base", node)
    parts = sorted(
        (key for key in base if key == TABLE_KEY or key.startswith(f"{TABLE_KEY}_")),
        key=lambda key: int(key.rpartition("_")[2] or 0) if key != TABLE_KEY else -1,
    )
    if not parts:
        return pd.DataFrame()
    table = pd.concat([base[key].read() for key in parts], axis=1)
    table = table.loc[:, ~table.columns.duplicated()]  # seq_num, time: in every part, or one
    first = [column for column in ("seq_num", "time") if column in table.columns]
    return table[first + [column for column in table.columns if column not in first]]
