"""``compose_analysis_run``: DBEP 6 ``data_dicts`` and ``md`` → files and validated documents."""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict, Unpack, cast

import event_model
from event_model.documents.stream_datum import StreamRange

from ..core._documents import validate_document
from ..core._errors import AnalysisInputError, AnalysisStoreError, InputTypeError, UnsafePathError
from ..core._files import is_storage_full, storage_full_error, value_bytes
from ..core._paths import contained_path
from ..core._staging import StagedFiles
from ..core._values import short_repr, to_json_value
from ..pairs._pairs import PairRegistry, default_registry
from ..provenance._content import content_hash
from ..provenance._policy import ProvenancePolicy, enforce_provenance
from ..provenance._provenance import Provenance
from ..provenance._samples import MetadataPacket
from ..provenance._start_metadata import PROVENANCE_KEYS, start_metadata
from ._keys import (
    RUN_UID_ATTRIBUTE,
    AssetForm,
    KeyLayout,
    Streams,
    check_asset_form,
    check_new_file,
    check_root,
    compose_asset,
    data_key,
    lay_out_data_dicts,
    provenance_attributes,
    refused_value,
    where_in_data_dicts,
)

if TYPE_CHECKING:
    from ..core._documents import AnalysisStart, NamedDocument


class RunOptions(TypedDict, total=False):
    """The keyword arguments that every way of saving a run takes, beside ``provenance`` (see
    :func:`compose_analysis_run` for each): written once, for ``prepare_analysis_run`` and
    ``AnalysisStore.save``."""

    writers: Mapping[str, Any] | None
    asset_form: AssetForm
    uid: str | None
    policy: ProvenancePolicy | None
    packet: MetadataPacket | None
    event_pages: bool


def check_run_options(options: Mapping[str, Any]) -> None:
    """Refuse a keyword that :class:`RunOptions` does not have (a typo would pass silently)."""
    accepted = RunOptions.__optional_keys__
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise InputTypeError(
            f"unexpected keyword argument(s) {', '.join(map(repr, unknown))}; accepted: "
            f"{', '.join(sorted(accepted))}, provenance"
        )


@dataclass(frozen=True)
class ComposedRun:
    """A composed analysis run: its files are written, its documents validated.

    Iterating yields ``(name, doc)`` pairs in emission order; each iteration yields fresh copies,
    so the run can be replayed into several consumers (a TiledWriter, a Filler, a serializer).

    Attributes
    ----------
    uid : str
        The start document's uid.
    documents : tuple of (str, dict)
        Every document, in order.
    files : tuple of Path
        The files written for the run's external keys.
    """

    uid: str
    documents: tuple[NamedDocument, ...]
    files: tuple[Path, ...]

    def __iter__(self) -> Iterator[NamedDocument]:
        for name, doc in self.documents:
            yield name, copy.deepcopy(doc)

    def __len__(self) -> int:
        return len(self.documents)


def _place_files(layouts: list[KeyLayout], start: AnalysisStart, root: Path | None) -> None:
    """Decide each written key's root, path and resource kwargs; check containment."""
    for layout in layouts:
        if layout.writer is None:
            continue
        where = where_in_data_dicts(None, layout.stream, layout.key)
        layout.root = layout.writer.root or root
        if layout.root is None:
            raise AnalysisInputError(
                f"{where} is written to a file but no root was given; pass root=DIRECTORY"
            )
        check_root(layout.root, where)
        if layout.writer.resource_func is not None:
            docs = {"start": copy.deepcopy(start), "stream_name": layout.stream}
            try:
                returned = layout.writer.resource_func(
                    docs, layout.key, **layout.writer.resource_func_kwargs
                )
            except Exception as error:
                raise AnalysisInputError(
                    f"{where}: the resource func raised {type(error).__name__}: {error}"
                ) from None
            if (
                not isinstance(returned, tuple)
                or len(returned) != 2
                or not isinstance(returned[0], str | Path)
                or not isinstance(returned[1], Mapping)
                or not all(isinstance(k, str) for k in returned[1])
            ):
                raise AnalysisInputError(
                    f"{where}: the resource func returned {short_repr(returned, 120)}; it must "
                    "return (resource_path: str, resource_kwargs: dict with str keys)"
                )
            relative, layout.resource_kwargs = str(returned[0]), dict(returned[1])
        else:
            relative = f"{start['uid']}/{layout.stream}/{layout.key}{layout.writer.pair.suffix}"
            layout.resource_kwargs = None
        try:
            layout.path = contained_path(layout.root, relative)
        except UnsafePathError as error:
            raise UnsafePathError(f"{where}: {error}") from None
        check_new_file(layout.path, where)


def _write_files(
    layouts: list[KeyLayout],
    streams: Streams,
    staged: StagedFiles,
    attributes: Mapping[str, str],
) -> None:
    written = [p for p in layouts if p.writer is not None and p.path is not None]
    bytes_needed = sum(value_bytes(data[p.key]) for p in written for _, data in streams[p.stream])
    for layout in written:
        assert layout.path is not None
        try:
            _write_file(layout, streams[layout.stream], staged, attributes)
        except OSError as error:
            if not is_storage_full(error):
                raise
            raise storage_full_error(error, layout.path, layout.root, bytes_needed) from error


def _write_file(
    layout: KeyLayout,
    entries: list[tuple[int, Mapping[str, Any]]],
    staged: StagedFiles,
    attributes: Mapping[str, str],
) -> None:
    """Write one key's values into its (staged) file."""
    assert layout.writer is not None
    assert layout.path is not None
    assert layout.root is not None
    if layout.resource_kwargs is None:
        layout.resource_kwargs = layout.writer.pair.resource_kwargs(
            entries[0][1][layout.key], layout.description
        )
    temporary = staged.stage(layout.path, layout.root)
    layout.datum_kwargs = []
    try:
        opened = layout.writer.pair.writer(str(temporary), **layout.resource_kwargs)
    except (TypeError, ValueError) as error:
        where = where_in_data_dicts(None, layout.stream, layout.key)
        raise AnalysisInputError(
            f"{where}: writer {layout.writer.pair.spec!r} cannot "
            f"be opened with resource kwargs {short_repr(layout.resource_kwargs, 120)}: {error}"
        ) from None
    with opened as writer:
        for n, data in entries:
            try:
                layout.datum_kwargs.append(writer(data[layout.key]))
            except (AnalysisStoreError, TypeError, ValueError) as error:
                where = where_in_data_dicts(n, layout.stream, layout.key)
                raise refused_value(where, layout.writer, error) from error
    if layout.writer.pair.annotate is not None:
        layout.writer.pair.annotate(str(temporary), attributes)


def _stream_documents(
    bundle: Any,
    stream: str,
    entries: list[tuple[int, Mapping[str, Any]]],
    layouts: list[KeyLayout],
    asset_form: AssetForm,
    now: float,
    event_pages: bool,
) -> Iterator[NamedDocument]:
    descriptor = bundle.compose_descriptor(
        name=stream, data_keys={p.key: data_key(p, asset_form) for p in layouts}, time=now
    )
    yield "descriptor", descriptor.descriptor_doc
    written = [p for p in layouts if p.writer is not None]
    datum_ids: dict[str, list[str]] = {}
    for layout in written:
        assert layout.writer is not None
        assert layout.path is not None
        assert layout.root is not None
        assert layout.datum_kwargs is not None
        name, document, resource = compose_asset(
            bundle.compose_stream_resource,
            bundle.compose_resource,
            asset_form,
            layout.writer.pair,
            layout.key,
            layout.path,
            layout.root,
            layout.resource_kwargs or {},
        )
        yield name, document
        if asset_form == "stream_resource":
            count = len(layout.datum_kwargs)
            yield (
                "stream_datum",
                resource.compose_stream_datum(
                    indices=StreamRange(start=0, stop=count),
                    seq_nums=StreamRange(start=1, stop=count + 1),
                    descriptor=descriptor.descriptor_doc,
                ),
            )
        else:
            datums = [resource.compose_datum(datum_kwargs=dk) for dk in layout.datum_kwargs]
            yield from (("datum", datum) for datum in datums)
            datum_ids[layout.key] = [datum["datum_id"] for datum in datums]
    inline = [p for p in layouts if p.writer is None]
    events = []
    for i, (_, data) in enumerate(entries):
        values = {p.key: to_json_value(data[p.key]) for p in inline}
        values.update({key: ids[i] for key, ids in datum_ids.items()})
        events.append(
            descriptor.compose_event(
                data=values,
                timestamps=dict.fromkeys(values, now),
                filled=dict.fromkeys(datum_ids, False),
                time=now,
                validate=False,  # every document is validated once, before files are published
            )
        )
    if event_pages:
        yield "event_page", event_model.pack_event_page(*events)  # a new dict
    else:
        yield from (("event", event) for event in events)


def compose_analysis_run(
    data_dicts: Sequence[Mapping[str, Mapping[str, Any]]],
    md: Mapping[str, Any],
    *,
    root: str | Path | None = None,
    writers: Mapping[str, Any] | None = None,
    registry: PairRegistry | None = None,
    asset_form: AssetForm = "stream_resource",
    uid: str | None = None,
    provenance: Provenance | Mapping[str, Any] | None = None,
    policy: ProvenancePolicy | None = None,
    packet: MetadataPacket | None = None,
    event_pages: bool = False,
) -> ComposedRun:
    """Write an analysis run's files and compose its event-model documents (DBEP 6).

    Everything is validated before anything is written. Files are written under temporary names
    beside their final ones and given their final names (hard link, never overwriting) only when
    every document has passed ``event_model.schema_validators`` (an event page: its structure
    and sampled rows, see ``validate_document``); on any error no file and no directory is
    left behind. The inputs are never mutated.

    Parameters
    ----------
    data_dicts : sequence of mappings
        ``data_dicts[n][stream_name][data_key]`` is one value: a number, string, numpy array or
        pandas DataFrame. Entry ``n`` becomes one event in each stream it holds; a stream may be
        missing from some entries (its sequence numbers still run 1, 2, 3 … without gaps).
    md : mapping
        Metadata for the start document (JSON-serializable; not ``uid`` or ``time``).
    root : str or Path, optional
        Existing directory under which files are written, as ``UID/STREAM/KEY.SUFFIX``.
        Required when any key is written to a file.
    writers : mapping, optional
        ``{data_key: entry}`` where an entry is a registered spec name (``"BAS_HDF5"``,
        ``"BAS_NPY"``, ``"BAS_TIFF"``, ``"BAS_TABLE_HDF5"``), a :class:`WriterHandlerPair`, or
        a DBEP 6 ``writers_dict`` entry ``{"writer", "resource": {"func", "kwargs"}, "root",
        "spec"}`` whose ``func(docs, data_key, **kwargs)`` returns ``(resource_path,
        resource_kwargs)``. Keys not named here travel inside the events, except DataFrames
        (→ ``BAS_TABLE_HDF5``) and empty arrays, arrays of more than 16 elements or complex values
        (→ ``BAS_HDF5``).
    registry : PairRegistry, optional
        Where spec names are looked up; default: every pair installed through entry points.
    asset_form : {"stream_resource", "resource"}
        ``"stream_resource"`` (default) emits StreamResource/StreamDatum, what tiled serves
        natively; ``"resource"`` emits Resource/Datum (the DBEP 6 form, for ``Filler`` and
        databroker v1 readers). The files are the same.
    uid : str, optional
        The run's uid (default: a new UUID4).
    provenance : Provenance or mapping
        Required: what produced the run (see :func:`capture_provenance`). It goes into the start
        document under ``provenance``, with copies people query by: ``analysis_name``,
        ``analysis_version``, ``parent_uids`` and ``lineage_hash``. HDF5 files also carry it
        (and the run uid) as root attributes. The start document also gets a
        ``content_hash``: what the run holds (metadata, every value, which pair writes each key,
        the document form), so two runs of one lineage can be compared without reading them.
    policy : ProvenancePolicy, optional
        What the provenance must satisfy (default: :class:`ProvenancePolicy`'s defaults); it is
        recorded in the start document as ``provenance_policy``.
    packet : MetadataPacket, optional
        Sample and system metadata merged into the start document; its transient keys are
        cleared once the run is composed.
    event_pages : bool
        Emit one ``event_page`` per stream instead of one ``event`` per entry (far cheaper to
        validate and insert; every consumer of event-model documents reads both).

    Returns
    -------
    ComposedRun
        Iterable of ``(name, doc)``: start, then per stream a descriptor, its (stream) resources
        and datums and its events, then stop.

    Raises
    ------
    AnalysisInputError
        Bad ``data_dicts``, ``md`` or ``writers``, naming the entry, stream and key.
    ProvenanceError
        Missing or malformed provenance, or provenance the policy does not accept.
    UnsafePathError
        A resource path that would leave its root.
    UnknownSpecError
        A spec name no pair is registered under.
    """
    options: RunOptions = {
        "writers": writers,
        "asset_form": asset_form,
        "uid": uid,
        "policy": policy,
        "packet": packet,
        "event_pages": event_pages,
    }
    return prepare_analysis_run(
        data_dicts, md, root=root, registry=registry, provenance=provenance, **options
    ).write()


def run_content_hash(
    metadata: Mapping[str, Any],
    streams: Mapping[str, list[tuple[int, Mapping[str, Any]]]],
    layouts: Mapping[str, list[KeyLayout]],
    asset_form: str,
) -> str:
    """:func:`content_hash` of a prepared run (its start metadata without provenance)."""
    return content_hash(
        {k: v for k, v in metadata.items() if k not in PROVENANCE_KEYS},
        {stream: [data for _, data in entries] for stream, entries in streams.items()},
        {
            stream: {p.key: p.writer.pair.spec if p.writer else None for p in stream_layouts}
            for stream, stream_layouts in layouts.items()
        },
        asset_form,
    )


@dataclass
class PreparedRun:
    """An analysis run checked and laid out, nothing written yet (see :func:`prepare_analysis_run`).

    Attributes
    ----------
    uid : str
        The run's uid.
    start : dict
        Its start document (``lineage_hash`` and ``content_hash`` included).
    """

    uid: str
    start: AnalysisStart
    _bundle: Any
    _streams: Streams
    _layouts: dict[str, list[KeyLayout]]
    _asset_form: AssetForm
    _event_pages: bool
    _packet: MetadataPacket | None

    @property
    def lineage_hash(self) -> str:
        """Who made it: analysis, version, parameters, parents, inputs."""
        return str(self.start["lineage_hash"])

    @property
    def content_hash(self) -> str:
        """What it holds: metadata and data (see :func:`content_hash`)."""
        return str(self.start["content_hash"])

    def done(self) -> None:
        """Clear the metadata packet's transient keys: the run is saved (or was already)."""
        if self._packet is not None:
            self._packet.reset()

    def write(self) -> ComposedRun:
        """Write the files and compose and validate every document; on any error, no file
        and no directory is left behind."""
        start = self.start
        flat_layouts = [
            layout for stream_layouts in self._layouts.values() for layout in stream_layouts
        ]
        now = time.time()
        with StagedFiles() as staged:
            attributes = {
                RUN_UID_ATTRIBUTE: start["uid"],
                **provenance_attributes(start["provenance"]),
            }
            _write_files(flat_layouts, self._streams, staged, attributes)
            documents: list[NamedDocument] = [("start", start)]
            for stream, entries in self._streams.items():
                documents.extend(
                    _stream_documents(
                        self._bundle,
                        stream,
                        entries,
                        self._layouts[stream],
                        self._asset_form,
                        now,
                        self._event_pages,
                    )
                )
            stop = self._bundle.compose_stop(exit_status="success", time=now)
            documents.append(("stop", stop))  # a new dict
            for name, doc in documents:
                validate_document(name, doc)
            try:
                files = staged.publish()
            except OSError as error:  # a directory entry or an fsync needs room too
                if isinstance(error, AnalysisStoreError) or not is_storage_full(error):
                    raise
                raise storage_full_error(error, error.filename or "", None, None) from error
        self.done()
        return ComposedRun(uid=start["uid"], documents=tuple(documents), files=tuple(files))


def prepare_analysis_run(
    data_dicts: Sequence[Mapping[str, Mapping[str, Any]]],
    md: Mapping[str, Any],
    *,
    root: str | Path | None = None,
    registry: PairRegistry | None = None,
    provenance: Provenance | Mapping[str, Any] | None = None,
    **options: Unpack[RunOptions],
) -> PreparedRun:
    """Check everything :func:`compose_analysis_run` checks and lay out the run, writing nothing.

    Arguments and errors are those of :func:`compose_analysis_run`, which is
    ``prepare_analysis_run(...).write()``. The prepared run knows its lineage and content hashes,
    so a caller can decide whether to write it at all (``AnalysisStore.save`` does).
    """
    check_run_options(options)
    writers, uid, policy = options.get("writers"), options.get("uid"), options.get("policy")
    packet, asset_form = options.get("packet"), options.get("asset_form", "stream_resource")
    event_pages = options.get("event_pages", False)
    check_asset_form(asset_form)
    registry = registry if registry is not None else default_registry()
    policy = policy if policy is not None else ProvenancePolicy()
    checked_provenance = enforce_provenance(provenance, policy)
    metadata = start_metadata(md, checked_provenance, policy, packet)
    streams, layouts = lay_out_data_dicts(data_dicts, writers, registry)
    metadata["content_hash"] = run_content_hash(metadata, streams, layouts, asset_form)
    try:
        bundle = event_model.compose_run(uid=uid, metadata=metadata)
    except Exception as error:
        raise AnalysisInputError(f"md does not make a valid start document: {error}") from None
    # compose_run put every key of ``metadata`` into it: the provenance keys and content_hash
    start = cast("AnalysisStart", dict(bundle.start_doc))
    flat_layouts = [layout for stream_layouts in layouts.values() for layout in stream_layouts]
    _place_files(flat_layouts, start, Path(root) if root is not None else None)
    return PreparedRun(
        uid=start["uid"],
        start=start,
        _bundle=bundle,
        _streams=streams,
        _layouts=layouts,
        _asset_form=asset_form,
        _event_pages=event_pages,
        _packet=packet,
    )
