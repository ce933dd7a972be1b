"""Per-key layout: which keys go to files, their data-key descriptions, names and limits.

The rules :func:`~bluesky_analysis_store.compose_analysis_run`, ``AnalysisDevice`` and the
``analyze`` plan share, written once: each data key is checked (name, TiledWriter's reserved
names), given a writer (named in ``writers`` or chosen by :func:`default_writer`) and described
(dtype, shape); every later value of the key must match that description.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ..core._errors import AnalysisInputError, AnalysisStoreError
from ..core._paths import check_name
from ..core._values import ValueDescription, describe_inline, is_dataframe, short_repr
from ..pairs._pairs import PairRegistry, WriterHandlerPair
from ..provenance._provenance import canonical_json
from ._writer_choice import KeyWriter, normalize_writers

if TYPE_CHECKING:
    from ..core._documents import Resource, StreamResource

AssetForm = Literal["stream_resource", "resource"]

#: HDF5 root attribute naming the run a file belongs to.
RUN_UID_ATTRIBUTE = "bluesky_analysis_store.run_uid"
#: HDF5 root attribute holding the run's provenance JSON.
PROVENANCE_ATTRIBUTE = "bluesky_analysis_store.provenance"

#: Entries of ``data_dicts`` grouped by stream, each with its position for error messages.
Streams = dict[str, list[tuple[int, Mapping[str, Any]]]]


def provenance_attributes(provenance: Any) -> dict[str, str]:
    """The file attribute recording a run's provenance (a start document's ``provenance``)."""
    return {PROVENANCE_ATTRIBUTE: canonical_json(provenance)}


def check_asset_form(asset_form: object, where: str | None = None) -> None:
    """Refuse an ``asset_form`` other than ``"stream_resource"`` or ``"resource"``."""
    if asset_form not in ("stream_resource", "resource"):
        head = "" if where is None else f"{where}: "
        raise AnalysisInputError(
            f"{head}asset_form={asset_form!r}; accepted: 'stream_resource' or 'resource'"
        )


def check_root(root: Path, where: str | None = None) -> None:
    """Refuse a file root that is not an existing directory."""
    if not root.is_dir():
        head = "" if where is None else f"{where}: "
        raise AnalysisInputError(f"{head}root {str(root)!r} is not an existing directory")


def check_new_file(path: Path, where: str, hint: str = "") -> None:
    """Refuse a file path that exists: files are never overwritten."""
    if path.exists():
        raise AnalysisInputError(
            f"{where}: {str(path)!r} already exists; files are never overwritten{hint}"
        )


def refused_value(where: str, writer: KeyWriter, error: Exception) -> AnalysisInputError:
    """The error for a value a key's file writer refused."""
    return AnalysisInputError(f"{where}: writer {writer.pair.spec!r} refused the value: {error}")


#: TiledWriter's ``RESERVED_DATA_KEYS`` (its own table columns) and ``MAX_ARRAY_SIZE`` (arrays
#: larger than this go to a file by default), as in bluesky-tiled-plugins 2.0.12. Kept here, not
#: imported: importing it takes seconds and brings tiled, which a JSONL store on a laptop does
#: without, and a run saved there follows the same rules (it goes into a tiled store later).
#: tests/test_stores.py checks them against the installed bluesky-tiled-plugins.
TILED_WRITER_LIMITS: tuple[frozenset[str], int] = (frozenset({"time", "seq_num"}), 16)


def tiled_writer_limits() -> tuple[frozenset[str], int]:
    """``(reserved data keys, inline array limit)``: :data:`TILED_WRITER_LIMITS`."""
    return TILED_WRITER_LIMITS


def check_not_reserved(key: str, where: str) -> None:
    """Refuse a data key TiledWriter reserves for its event table."""
    reserved = tiled_writer_limits()[0]
    if key in reserved:
        raise AnalysisInputError(
            f"{where}: data key {key!r} is reserved for the event table; rename it "
            f"(reserved: {sorted(reserved)})"
        )


@dataclass
class KeyLayout:
    """One data key of one stream: its description and, for a key written to a file, how.

    ``path``, ``root``, ``resource_kwargs`` and ``datum_kwargs`` are filled in as the file is
    placed and written.
    """

    stream: str
    key: str
    description: ValueDescription
    writer: KeyWriter | None = None  # None: the value travels inside the event
    path: Path | None = None
    root: Path | None = None
    resource_kwargs: dict[str, Any] | None = None
    datum_kwargs: list[dict[str, Any]] | None = None


def default_writer(value: Any, registry: PairRegistry) -> KeyWriter | None:
    """Where a key named in no ``writers`` entry goes: a DataFrame, a big or an empty array to a
    file."""
    if is_dataframe(value):
        return KeyWriter(pair=registry["BAS_TABLE_HDF5"])
    size = getattr(value, "size", 1)
    is_complex = getattr(getattr(value, "dtype", None), "kind", "") == "c" or isinstance(
        value, complex
    )
    # An empty array goes to a file too: tiled keeps it in the event table, read back as text.
    big_or_empty = size > tiled_writer_limits()[1] or size == 0
    if (getattr(value, "ndim", 0) and big_or_empty) or is_complex:
        return KeyWriter(pair=registry["BAS_HDF5"])
    return None


def describe_value(value: Any, writer: KeyWriter | None, where: str) -> ValueDescription:
    """Describe one value as its writer (or the event, for ``None``) will hold it."""
    describe = writer.describe if writer is not None else describe_inline
    try:
        return describe(value)
    except AnalysisStoreError as error:
        raise AnalysisInputError(f"{where}: {error}") from None


def lay_out_key(
    stream: str,
    key: str,
    value: Any,
    writers: Mapping[str, KeyWriter],
    registry: PairRegistry,
    where: str,
) -> KeyLayout:
    """Check a data key's name, choose its writer and describe its first value.

    ``where`` names the mapping holding the key, for error messages.
    """
    check_name(key, f"{where}: data key")
    check_not_reserved(key, where)
    writer = writers.get(key) or default_writer(value, registry)
    return KeyLayout(stream, key, describe_value(value, writer, f"{where}[{key!r}]"), writer)


def check_same_description(
    layout: KeyLayout, value: Any, where: str, earlier: str, scope: str
) -> None:
    """Refuse a later value of a key whose dtype or shape differs from its layout.

    ``earlier`` names the first value with its verb (``"data_dicts[0]['s']['k'] has"``),
    ``scope`` how long the description holds (``"within a stream"``).
    """
    this = describe_value(value, layout.writer, where)
    if this != layout.description:
        raise AnalysisInputError(
            f"{where} has {this.summary()} but {earlier} {layout.description.summary()}; a key "
            f"keeps one dtype and shape (and table index) {scope}"
        )


def check_same_keys(
    keys: Collection[str], expected: Collection[str], got: str, earlier: str, rule: str
) -> None:
    """Refuse a mapping whose keys differ from the laid-out keys, naming missing and extra."""
    if set(keys) != set(expected):
        missing, extra = sorted(set(expected) - set(keys)), sorted(set(keys) - set(expected))
        raise AnalysisInputError(
            f"{got} {sorted(keys)} but {earlier} {sorted(expected)} (missing {missing}, extra "
            f"{extra}); {rule}"
        )


def data_key(layout: KeyLayout, asset_form: AssetForm) -> dict[str, Any]:
    """The descriptor's data key of a laid-out key (``external`` for a key in a file)."""
    description = layout.description.as_data_key(source="analysis")
    if layout.writer is not None:
        description["external"] = "STREAM:" if asset_form == "stream_resource" else "FILESTORE:"
    elif layout.description.dtype == "string":
        del description["dtype_numpy"]
    return description


def compose_asset(
    compose_stream_resource: Callable[..., Any],
    compose_resource: Callable[..., Any],
    asset_form: AssetForm,
    pair: WriterHandlerPair,
    key: str,
    path: Path,
    root: Path,
    kwargs: Mapping[str, Any],
) -> tuple[str, StreamResource | Resource, Any]:
    """A file's (stream) resource: ``(document name, document, event-model bundle)``.

    The two callables are event-model's composers (a run bundle's or standalone ones).
    """
    if asset_form == "stream_resource":
        # Keep the spec beside the parameters: tiled records it on the array node.
        bundle = compose_stream_resource(
            mimetype=pair.mimetype,
            uri=path.as_uri(),
            data_key=key,
            parameters={**kwargs, "spec": pair.spec},
        )
        return "stream_resource", bundle.stream_resource_doc, bundle
    resolved_root = root.resolve()
    bundle = compose_resource(
        spec=pair.spec,
        root=str(resolved_root),
        resource_path=path.relative_to(resolved_root).as_posix(),
        resource_kwargs=dict(kwargs),
    )
    return "resource", bundle.resource_doc, bundle


def where_in_data_dicts(n: int | None, stream: str, key: str | None = None) -> str:
    """``data_dicts[n]['stream']['key']``, for error messages."""
    head = "data_dicts" if n is None else f"data_dicts[{n}]"
    return f"{head}[{stream!r}]" + ("" if key is None else f"[{key!r}]")


def group_streams(data_dicts: Any) -> Streams:
    """Group the entries by stream, keeping each entry's position for error messages."""
    if not isinstance(data_dicts, Sequence) or isinstance(data_dicts, str | bytes):
        raise AnalysisInputError(
            "data_dicts must be a list of {stream_name: {data_key: value}} mappings; "
            f"got {type(data_dicts).__name__}"
        )
    streams: Streams = {}
    for n, entry in enumerate(data_dicts):
        if not isinstance(entry, Mapping):
            raise AnalysisInputError(
                f"data_dicts[{n}] must map stream names to {{data_key: value}}; "
                f"got {short_repr(entry)}"
            )
        for stream, data in entry.items():
            check_name(stream, f"data_dicts[{n}]: stream name")
            if not isinstance(data, Mapping) or not data:
                raise AnalysisInputError(
                    f"{where_in_data_dicts(n, stream)} must be a non-empty mapping of data keys "
                    f"to values; got {short_repr(data)}"
                )
            # names are checked in full once per stream; a key that is no string would break
            # the comparisons (and the error messages) before that
            for key in data:
                if not isinstance(key, str):
                    check_name(key, f"{where_in_data_dicts(n, stream)}: data key")
            streams.setdefault(stream, []).append((n, data))
    if not streams:
        raise AnalysisInputError("data_dicts holds no data; give at least one stream")
    return streams


def _lay_out_stream(
    stream: str,
    entries: list[tuple[int, Mapping[str, Any]]],
    writers: dict[str, KeyWriter],
    registry: PairRegistry,
) -> list[KeyLayout]:
    first_n, first = entries[0]
    first_where = where_in_data_dicts(first_n, stream)
    for n, data in entries[1:]:
        check_same_keys(
            data,
            first,
            f"{where_in_data_dicts(n, stream)} has keys",
            f"{first_where} has",
            "every entry of a stream must carry the same data keys",
        )
    layouts = []
    for key in first:
        layout = lay_out_key(stream, key, first[key], writers, registry, first_where)
        for n, data in entries[1:]:
            check_same_description(
                layout,
                data[key],
                where_in_data_dicts(n, stream, key),
                f"{first_where}[{key!r}] has",
                "within a stream",
            )
        layouts.append(layout)
    return layouts


def lay_out_streams(
    streams: Streams, writers: dict[str, KeyWriter], registry: PairRegistry
) -> dict[str, list[KeyLayout]]:
    """Lay out every stream's keys; a key name is written to a file in every stream or in none.

    TiledWriter keeps one kind per data key name in a run: a key external in one stream and
    inside the events in another breaks the second stream's descriptor (refused by tiled, the
    run left half written). It is refused here, before anything is written.
    """
    layouts = {
        stream: _lay_out_stream(stream, entries, writers, registry)
        for stream, entries in streams.items()
    }
    kinds: dict[str, tuple[str, bool]] = {}
    for stream, stream_layouts in layouts.items():
        for layout in stream_layouts:
            written = layout.writer is not None
            first_stream, first_written = kinds.setdefault(layout.key, (stream, written))
            if first_written != written:
                where_file, where_event = (
                    (first_stream, stream) if first_written else (stream, first_stream)
                )
                raise AnalysisInputError(
                    f"data key {layout.key!r} is written to a file in stream {where_file!r} but "
                    f"travels inside the events of stream {where_event!r}; a run keeps one kind "
                    "per key name (tiled's TiledWriter): rename one of them, or name a writer "
                    f"for {layout.key!r} in writers= so that every stream writes it to a file"
                )
    return layouts


def lay_out_data_dicts(
    data_dicts: Any, writers: Mapping[str, Any] | None, registry: PairRegistry
) -> tuple[Streams, dict[str, list[KeyLayout]]]:
    """Check ``data_dicts`` and ``writers`` and layout every key: ``(streams, layouts)``."""
    streams = group_streams(data_dicts)
    key_writers = normalize_writers(writers, registry)
    all_keys = {key for entries in streams.values() for key in entries[0][1]}
    unknown = sorted(set(key_writers) - all_keys)
    if unknown:
        raise AnalysisInputError(
            f"writers names keys {unknown} that no stream holds; data keys: {sorted(all_keys)}"
        )
    return streams, lay_out_streams(streams, key_writers, registry)
