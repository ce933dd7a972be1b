"""Glue to bluesky-tiled-plugins' ``TiledWriter``: our mimetypes and a ready-made writer.

Imported lazily: ``bluesky_tiled_plugins.writing`` costs over a second to import.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from ._errors import AnalysisInputError, AnalysisStoreError
from ._pairs import PairRegistry
from ._paths import check_name
from ._values import beyond_int64, beyond_json_integers

#: Single-file mimetypes of our pairs whose tiled adapters take one ``data_uri``.
SINGLE_FILE_MIMETYPES = ("image/tiff", "application/x-npy")


def _single_file_consolidator_class() -> type:
    from bluesky_tiled_plugins.writing.consolidators import ConsolidatorBase
    from tiled.structures.data_source import Asset

    class SingleFileConsolidator(ConsolidatorBase):
        """One file holds the whole stack; tiled's TiffAdapter/NPYAdapter read it as one block.

        The base class registers its asset as an item of ``data_uris`` (a file sequence); the
        single-file adapters take ``data_uri`` instead.
        """

        supported_mimetypes: ClassVar[set[str]] = set(SINGLE_FILE_MIMETYPES)

        def __init__(self, stream_resource: Any, descriptor: Any) -> None:
            super().__init__(stream_resource, descriptor)
            self.assets = [
                Asset(data_uri=self.uri, is_directory=False, parameter="data_uri", num=None)
            ]

    return SingleFileConsolidator


def register_tiled_consolidators() -> None:
    """Teach TiledWriter our single-file mimetypes (idempotent, add-only).

    ``CONSOLIDATOR_REGISTRY`` is bluesky-tiled-plugins' documented extension point for new
    mimetypes. An entry that someone else registered for the same mimetype is left alone and
    reported, never replaced.

    Raises
    ------
    RuntimeError
        If another consolidator already handles one of ``SINGLE_FILE_MIMETYPES``.
    """
    from bluesky_tiled_plugins.writing.consolidators import CONSOLIDATOR_REGISTRY

    consolidator = None
    for mimetype in SINGLE_FILE_MIMETYPES:
        existing = dict(CONSOLIDATOR_REGISTRY).get(mimetype)
        if existing is not None:
            if existing.__name__ != "SingleFileConsolidator":
                raise RuntimeError(
                    f"TiledWriter already has consolidator {existing!r} for {mimetype!r}; "
                    "bluesky-analysis-store's TIFF/NPY pairs need its single-file consolidator"
                )
            continue
        consolidator = consolidator or _single_file_consolidator_class()
        CONSOLIDATOR_REGISTRY[mimetype] = consolidator


def analysis_tiled_writer(
    container: Any, registry: PairRegistry | None = None, **kwargs: Any
) -> CheckedTiledWriter:
    """A ``TiledWriter`` on ``container`` that understands every pair in ``registry``, behind
    :class:`CheckedTiledWriter`'s gate (bad or out-of-order documents raise
    :class:`InvalidDocumentError` and are not written).

    Parameters
    ----------
    container : tiled container client
        Where runs are written (ideally a ``CatalogOfBlueskyRuns`` container).
    registry : PairRegistry, optional
        Its specs are mapped to mimetypes; default: every installed pair.
    **kwargs
        Passed to ``TiledWriter`` (``batch_size``, ``patches``, ...). ``max_array_size``
        defaults to 0: every array kept inside the events becomes an array node. TiledWriter's
        own default keeps arrays of up to 16 elements as list columns of the event table, which
        tiled's client (through dask's ``dataframe.convert-string``) reads back as strings.
    """
    from bluesky_tiled_plugins.writing.tiled_writer import TiledWriter

    from ._compose import default_registry

    register_tiled_consolidators()
    registry = registry if registry is not None else default_registry()
    spec_to_mimetype = {**registry.spec_to_mimetype(), **kwargs.pop("spec_to_mimetype", {})}
    kwargs.setdefault("max_array_size", 0)
    return CheckedTiledWriter(TiledWriter(container, spec_to_mimetype=spec_to_mimetype, **kwargs))


class InvalidDocumentError(AnalysisInputError):
    """A document given to the writer is malformed or out of order; it was not written.

    The message names the document (its name and uid), the offending field and what is
    accepted. Documents of the same run that were accepted before stay written.
    """


class DocumentWriteError(AnalysisStoreError, RuntimeError):
    """tiled refused a document that passed every check here (the server's own reason is the
    ``__cause__``; ``response`` is the HTTP response, if any)."""

    response: Any = None


#: Event-model JSON types and the Python values that carry them inside events.
_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "number": (int, float, np.integer, np.floating),
    "integer": (int, np.integer),
    "boolean": (bool, np.bool_),
    "string": (str,),
    "array": (list, tuple, np.ndarray),
}


def _doc_id(name: str, doc: Mapping[str, Any]) -> str:
    ident = doc.get("uid", doc.get("datum_id")) if isinstance(doc, Mapping) else None
    return f"{name} document" + (f" {ident!r:.80}" if ident is not None else "")


def _nonfinite(value: Any, where: str) -> str | None:
    """Where NaN or infinity hides inside ``value`` (a JSON-like tree), or None."""
    if isinstance(value, float | np.floating):
        return None if math.isfinite(value) else where
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "fc" and not np.isfinite(value).all():
            return where
        return None
    if isinstance(value, Mapping):
        for key, item in value.items():
            if (found := _nonfinite(item, f"{where}[{key!r}]")) is not None:
                return found
    elif isinstance(value, list | tuple):
        if all(type(item) in _PLAIN_SCALARS for item in value):  # an event page's column
            for index, item in enumerate(value):
                if type(item) is float and not math.isfinite(item):
                    return f"{where}[{index}]"
            return None
        for index, item in enumerate(value):
            if (found := _nonfinite(item, f"{where}[{index}]")) is not None:
                return found
    return None


#: Documents TiledWriter keeps as node metadata (their numbers pass its JSON clamping).
_METADATA_DOCUMENTS = frozenset({"start", "stop", "descriptor", "resource", "stream_resource"})

#: Values whose finiteness is decided without looking inside them.
_PLAIN_SCALARS = frozenset({int, float, str, bool, type(None)})


def _check_data_keys(what: str, data_keys: Mapping[str, Any]) -> None:
    for key, spec in data_keys.items():
        try:
            check_name(key, f"{what}: data key")
        except AnalysisInputError as error:
            raise InvalidDocumentError(str(error)) from None
        dtype_numpy = spec.get("dtype_numpy")
        if dtype_numpy is not None:
            try:
                np.dtype(
                    dtype_numpy if isinstance(dtype_numpy, str) else list(map(tuple, dtype_numpy))
                )
            except (TypeError, ValueError) as error:
                raise InvalidDocumentError(
                    f"{what}: data key {key!r} has dtype_numpy {dtype_numpy!r:.80}, which numpy "
                    f"does not understand ({error}); give a numpy dtype string such as '<f8'"
                ) from None


def check_document(name: Any, doc: Any) -> None:
    """Check one document on its own: a known name, the event-model schema, finite numbers and
    safe stream and data key names.

    Raises
    ------
    InvalidDocumentError
        Naming the document, the field and what is accepted.
    """
    from event_model import DocumentNames
    from jsonschema.exceptions import ValidationError  # type: ignore[import-untyped]

    from ._compose import validate_document

    names = sorted(n.value for n in DocumentNames if not n.value.startswith("bulk_"))
    if not isinstance(name, str) or name not in names:
        raise InvalidDocumentError(f"document name {name!r:.80} is not one of {names}")
    if not isinstance(doc, Mapping):
        raise InvalidDocumentError(f"a {name} document must be a mapping; got {type(doc).__name__}")
    what = _doc_id(name, doc)
    for key in doc:
        if not isinstance(key, str):
            raise InvalidDocumentError(f"{what} has a field named {key!r:.80}; names are strings")
    if (where := _nonfinite(doc, name)) is not None:
        raise InvalidDocumentError(
            f"{what}: {where} is NaN or infinity, which a JSON document cannot carry; write "
            "such values to a file (an external data key) or replace them"
        )
    if name in _METADATA_DOCUMENTS and (where := beyond_json_integers(doc, name)) is not None:
        raise InvalidDocumentError(
            f"{what}: {where} is a whole number beyond ±(2**53 - 1), which TiledWriter would "
            "store clamped (it would read back changed); give it as a string"
        )
    try:
        validate_document(name, doc)
    except ValidationError as error:
        field = "".join(f"[{p!r}]" for p in error.absolute_path) or "(the document)"
        raise InvalidDocumentError(
            f"{what} does not follow the event-model schema at {field}: {error.message:.300}"
        ) from None
    except (AnalysisInputError, KeyError, IndexError, TypeError, ValueError) as error:
        raise InvalidDocumentError(f"{what} is malformed: {error!s:.300}") from None
    if name == "descriptor":
        if "name" not in doc:  # optional in the schema, but it is the stream's name in tiled
            raise InvalidDocumentError(f"{what} lacks 'name'; name the stream it describes")
        try:
            check_name(doc["name"], f"{what}: stream name")
        except AnalysisInputError as error:
            raise InvalidDocumentError(str(error)) from None
        _check_data_keys(what, doc["data_keys"])
    elif name == "stream_resource":
        try:
            check_name(doc["data_key"], f"{what}: data_key")
        except AnalysisInputError as error:
            raise InvalidDocumentError(str(error)) from None


class _Run:
    """What one open run has declared so far."""

    def __init__(self, uid: str) -> None:
        self.uid = uid
        self.descriptors: dict[str, Mapping[str, Any]] = {}  # uid -> data_keys
        self.resources: set[str] = set()
        self.stream_resources: dict[str, str] = {}  # uid -> the data key it holds
        self.datums: set[str] = set()
        self.refused: list[str] = []  # why documents of this run were refused
        self.stream_names: dict[str, str] = {}  # descriptor uid -> stream name
        self.rows: dict[str, int] = {}  # descriptor uid -> events received
        self.stream_rows: dict[tuple[str, str], int] = {}  # (descriptor, stream resource) -> rows
        self.external: dict[str, bool] = {}  # data key name -> external (in every stream)

    def received(self) -> dict[str, int]:
        """Whole rows received per stream. A row counts once every part of it arrived: its
        event, unless every key of the stream is in stream resources (``external: STREAM:``;
        such a stream may come without events), and its slice of each of those keys."""
        counts: dict[str, int] = {}
        for descriptor, name in self.stream_names.items():
            keys = self.descriptors[descriptor]
            streamed = {k for k, spec in keys.items() if _is_streamed(spec)}
            parts = [
                sum(
                    rows
                    for (d, resource), rows in self.stream_rows.items()
                    if d == descriptor and self.stream_resources.get(resource) == key
                )
                for key in streamed
            ]
            if len(streamed) < len(keys) or not parts:
                parts.append(self.rows.get(descriptor, 0))
            counts[name] = counts.get(name, 0) + min(parts)
        return counts


#: Specs for which TiledWriter supplies the dataset inside an HDF5 file when a resource lacks it.
_SPECS_WITH_DEFAULT_DATASET = frozenset(
    {"AD_HDF5", "AD_HDF5_SINGLE", "AD_HDF5_SWMR", "HDF5", "XSP", "XSP3", "TPX_HDF5"}
)


def _is_streamed(spec: Any) -> bool:
    external = spec.get("external") if isinstance(spec, Mapping) else None
    return isinstance(external, str) and external.startswith("STREAM:")


class CheckedTiledWriter:
    """A ``TiledWriter`` behind a gate: each document is checked, on its own and against the
    documents of its run seen so far, before the writer sees it.

    Refused: unknown document names, documents that break the event-model schema, NaN or
    infinity anywhere, stream or data key names outside the safe alphabet (no ``.`` or ``/``),
    a document of a run that was not started (or is already stopped), a second start with the
    same uid, events for unknown descriptors, events whose keys or value types disagree with
    their descriptor, datums before their resource, and stream datums before their stream
    resource. Errors raised by the writer itself become :class:`DocumentWriteError`.

    Attributes
    ----------
    writer : TiledWriter
        The wrapped writer (bluesky-tiled-plugins).
    """

    def __init__(self, writer: Any) -> None:
        self.writer = writer
        self._runs: dict[str, _Run] = {}
        self._owner: dict[str, str] = {}  # descriptor/resource/stream_resource/datum uid -> run

    def _run(self, what: str, run_uid: Any, via: str) -> _Run:
        run = self._runs.get(run_uid) if isinstance(run_uid, str) else None
        if run is None:
            raise InvalidDocumentError(
                f"{what} refers through {via!r} to {run_uid!r:.80}, which is no open run here; "
                "send a run's start first, then its descriptors, resources and datums, then the "
                "events that use them, and the stop last"
            )
        return run

    def _owned(self, what: str, uid: Any, via: str) -> _Run:
        return self._run(what, self._owner.get(uid) if isinstance(uid, str) else None, via)

    def check(
        self, name: str, doc: Mapping[str, Any], *, document_checked: bool = False
    ) -> _Run | None:
        """Raise :class:`InvalidDocumentError` unless ``doc`` may be written next
        (``document_checked``: :func:`check_document` has passed already)."""
        if not document_checked:
            check_document(name, doc)
        what = _doc_id(name, doc)
        if name == "start":
            if doc["uid"] in self._runs:
                raise InvalidDocumentError(f"{what}: a run with this uid is already open")
            return None
        if name in ("descriptor", "resource", "stream_resource", "stop"):
            if name == "resource" and "run_start" not in doc:
                raise InvalidDocumentError(f"{what} lacks 'run_start'; name the run it belongs to")
            run = self._run(what, doc["run_start"], "run_start")
            self._check_not_poisoned(what, name, doc, run)
            if name != "stop" and doc["uid"] in self._owner:
                raise InvalidDocumentError(f"{what}: this uid was already sent")
            if name == "stop":
                self._check_event_counts(what, doc, run)
            if name == "descriptor":
                self._check_key_kinds(what, doc, run)
            if name in ("resource", "stream_resource"):
                self._check_hdf5_dataset(what, name, doc)
            return run
        if name == "datum":
            run = self._owned(what, doc["resource"], "resource")
            self._check_not_poisoned(what, name, doc, run)
            if doc["resource"] not in run.resources:
                raise InvalidDocumentError(f"{what}: 'resource' is not a resource document")
            return run
        if name == "datum_page":
            raise InvalidDocumentError(f"{what}: send datums one by one (datum documents)")
        if name == "stream_datum":
            run = self._owned(what, doc["stream_resource"], "stream_resource")
            self._check_not_poisoned(what, name, doc, run)
            if doc["stream_resource"] not in run.stream_resources:
                raise InvalidDocumentError(f"{what}: 'stream_resource' is no stream resource")
            if doc["descriptor"] not in run.descriptors:
                raise InvalidDocumentError(
                    f"{what} refers to descriptor {doc['descriptor']!r:.80}, not one of its run's"
                )
            indices, seq_nums = doc["indices"], doc["seq_nums"]
            if not (0 <= indices["start"] <= indices["stop"]) or (
                seq_nums["stop"] - seq_nums["start"] != indices["stop"] - indices["start"]
            ):
                raise InvalidDocumentError(
                    f"{what}: indices {indices} and seq_nums {seq_nums} must be ranges of one "
                    "length with 0 <= start <= stop"
                )
            return run
        # event or event_page
        run = self._owned(what, doc["descriptor"], "descriptor")
        self._check_not_poisoned(what, name, doc, run)
        data_keys = run.descriptors[doc["descriptor"]]
        self._check_event_data(what, name, doc, data_keys, run)
        return run

    @staticmethod
    def _check_not_poisoned(what: str, name: str, doc: Mapping[str, Any], run: _Run) -> None:
        """After a refused document, a run may only end with a stop that does not claim
        success: it must never look complete without that document."""
        if not run.refused or (name == "stop" and doc.get("exit_status") != "success"):
            return
        raise InvalidDocumentError(
            f"{what}: run {run.uid} lost document(s) that were refused earlier "
            f"({'; '.join(run.refused[:2])}); its other documents are refused so that it never "
            "looks complete. Close it with a stop whose exit_status is 'fail' or 'abort', or "
            "send the whole run again under a new uid"
        )

    @staticmethod
    def _check_key_kinds(what: str, descriptor: Mapping[str, Any], run: _Run) -> None:
        """TiledWriter keeps one kind per data key name in a run (external or in the events);
        a descriptor that flips one would be refused by tiled halfway through the run."""
        for key, spec in descriptor["data_keys"].items():
            external = "external" in spec
            if run.external.get(key, external) != external:
                here, before = ("in a file", "inside the events")[:: 1 if external else -1]
                raise InvalidDocumentError(
                    f"{what}: data key {key!r} is {here} in stream {descriptor['name']!r} but "
                    f"{before} in an earlier stream of run {run.uid}; a run keeps one kind per "
                    "key name: rename the key"
                )

    def _check_hdf5_dataset(self, what: str, name: str, doc: Mapping[str, Any]) -> None:
        """tiled reads an HDF5 asset at ``parameters['dataset']`` (or ``'path'``); without one it
        opens the file's root group, and a run that looks complete could not be read."""
        if name == "resource":
            spec, parameters = doc["spec"], doc["resource_kwargs"]
            if spec in _SPECS_WITH_DEFAULT_DATASET:
                return  # TiledWriter fills in the detector's dataset
            from bluesky_tiled_plugins.writing.tiled_writer import MIMETYPE_LOOKUP

            # the mapping TiledWriter converts a resource with: its defaults, then ours
            ours = getattr(self.writer, "spec_to_mimetype", {})
            mimetype = ours.get(spec) or MIMETYPE_LOOKUP.get(spec)
            field = "resource_kwargs"
        else:
            mimetype, parameters, field = doc["mimetype"], doc["parameters"], "parameters"
        if mimetype != "application/x-hdf5":
            return
        dataset = parameters.get("path", parameters.get("dataset"))
        if not isinstance(dataset, str) or not dataset.strip("/"):
            raise InvalidDocumentError(
                f"{what}: an HDF5 file needs {field}['dataset'], the path of the data inside the "
                f"file (for instance '/data'); got {field} {dict(parameters)!r:.160}"
            )

    @staticmethod
    def _check_event_counts(what: str, stop: Mapping[str, Any], run: _Run) -> None:
        """A stop claiming success must count the events this run received, stream by stream:
        otherwise documents are missing (or would come after the stop)."""
        claimed = stop.get("num_events") or {}
        if stop.get("exit_status") != "success" or not isinstance(claimed, Mapping):
            return
        received = run.received()
        wrong = {s: n for s, n in claimed.items() if received.get(s, 0) != n}
        if wrong:
            raise InvalidDocumentError(
                f"{what} claims success with num_events {dict(claimed)!r:.200}, but this run "
                f"received {received!r:.200}: documents are missing or were sent out of order "
                "(every event before the stop); the run is left without a stop, so it does not "
                "look complete"
            )

    def _guess_run(self, name: Any, doc: Any) -> _Run | None:
        """The open run a (perhaps malformed) document seems to belong to, if any."""
        if name == "start" or not isinstance(doc, Mapping):
            return None
        run_start = doc.get("run_start")
        if isinstance(run_start, str) and run_start in self._runs:
            return self._runs[run_start]
        for link in ("descriptor", "resource", "stream_resource"):
            target = doc.get(link)
            if isinstance(target, str) and target in self._owner:
                return self._runs.get(self._owner[target])
        return None

    def poison(self, reason: str, run_uid: str | None = None) -> None:
        """Record that a document of run ``run_uid`` (of every open run, if None: one of them
        lost a document nobody can attribute) was refused; see :meth:`check`."""
        runs = [self._runs[run_uid]] if run_uid in self._runs else []
        if run_uid is None:
            runs = list(self._runs.values())
        for run in runs:
            if len(run.refused) < 5:
                run.refused.append(reason[:300])

    def _check_event_data(
        self, what: str, name: str, doc: Mapping[str, Any], data_keys: Mapping[str, Any], run: _Run
    ) -> None:
        expected = {key for key, spec in data_keys.items() if not _is_streamed(spec)}
        for field in ("data", "timestamps"):
            if set(doc[field]) != expected:
                raise InvalidDocumentError(
                    f"{what}: {field} has keys {sorted(doc[field])!r:.200} but its descriptor "
                    f"declares {sorted(expected)!r:.200}; an event carries every (non-stream) "
                    "data key of its descriptor, no more"
                )
        filled = doc.get("filled") or {}
        rows = len(doc["seq_num"]) if name == "event_page" else 1
        for key in sorted(expected):
            spec = data_keys[key]
            column = doc["data"][key] if name == "event_page" else [doc["data"][key]]
            if name == "event_page" and len(column) != rows:
                raise InvalidDocumentError(
                    f"{what}: data[{key!r}] has {len(column)} rows, not {rows}"
                )
            external = "external" in spec
            accepted = (str,) if external else _JSON_TYPES.get(spec["dtype"], (object,))
            for row, value in enumerate(column):
                is_filled = filled.get(key, False)
                if isinstance(is_filled, list):
                    is_filled = row < len(is_filled) and is_filled[row]
                if external and is_filled is True:
                    continue  # the value itself, already read from its file
                wrong_bool = spec["dtype"] in ("number", "integer") and isinstance(value, bool)
                if not isinstance(value, accepted) or (not external and wrong_bool):
                    raise InvalidDocumentError(
                        f"{what}: data[{key!r}] (row {row}) is {value!r:.80}, but its "
                        f"descriptor declares "
                        f"{'a datum id (str)' if external else repr(spec['dtype'])}"
                    )
                if not external and (where := beyond_int64(value, f"data[{key!r}]")):
                    raise InvalidDocumentError(
                        f"{what}: {where} (row {row}) does not fit a 64-bit signed integer, the "
                        "widest an event table holds; send it as a string or a float"
                    )
                if external and value not in run.datums:
                    raise InvalidDocumentError(
                        f"{what}: data[{key!r}] refers to datum {value!r:.80}, which was not "
                        "sent before it (send the resource and its datums before the event)"
                    )

    def __call__(self, name: str, doc: dict[str, Any]) -> None:
        self.write(name, doc)

    def write(self, name: str, doc: dict[str, Any], *, document_checked: bool = False) -> None:
        """Check ``doc`` (see :meth:`check`), then write it.

        A document refused here or by tiled poisons its run: the run's later documents are
        refused too, but for a stop that does not claim success, so that a run that lost a
        document never looks complete. A document that cannot be attributed to a run poisons
        every open run.
        """
        try:
            run = self.check(name, doc, document_checked=document_checked)
        except InvalidDocumentError as error:
            guessed = self._guess_run(name, doc)
            if guessed is not None:
                self.poison(str(error), guessed.uid)
            elif name != "start":
                self.poison(str(error))
            raise
        try:
            self.writer(name, doc)
        except Exception as error:
            wrapped = DocumentWriteError(
                f"tiled did not accept {_doc_id(name, doc)}: {type(error).__name__}: {error!s:.500}"
            )
            wrapped.response = getattr(error, "response", None)
            if run is not None:
                self.poison(str(wrapped), run.uid)
            raise wrapped from error
        self._record(name, doc, run)

    def forget(self, uid: str) -> None:
        """Stop following run ``uid`` (sent elsewhere; its later documents are refused)."""
        self._runs.pop(uid, None)
        for key in [k for k, v in self._owner.items() if v == uid]:
            del self._owner[key]

    def _record(self, name: str, doc: Mapping[str, Any], run: _Run | None) -> None:
        if name == "start":
            self._runs[doc["uid"]] = _Run(doc["uid"])
            return
        assert run is not None
        if name == "descriptor":
            run.descriptors[doc["uid"]] = doc["data_keys"]
            run.stream_names[doc["uid"]] = doc["name"]
            for key, spec in doc["data_keys"].items():
                run.external.setdefault(key, "external" in spec)
        elif name in ("event", "event_page"):
            rows = len(doc["seq_num"]) if name == "event_page" else 1
            run.rows[doc["descriptor"]] = run.rows.get(doc["descriptor"], 0) + rows
            return
        elif name == "stream_datum":
            pair = (doc["descriptor"], doc["stream_resource"])
            covered = doc["seq_nums"]["stop"] - doc["seq_nums"]["start"]
            run.stream_rows[pair] = run.stream_rows.get(pair, 0) + covered
            return
        elif name == "resource":
            run.resources.add(doc["uid"])
        elif name == "stream_resource":
            run.stream_resources[doc["uid"]] = doc["data_key"]
        elif name == "datum":
            run.datums.add(doc["datum_id"])
            self._owner[doc["datum_id"]] = run.uid
            return
        elif name == "stop":
            self.forget(run.uid)  # closed: nothing more may come for it
            return
        else:
            return
        self._owner[doc["uid"]] = run.uid

    def __getattr__(self, attribute: str) -> Any:  # the TiledWriter's own attributes
        return getattr(self.writer, attribute)
