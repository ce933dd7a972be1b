"""The document gate: what a run's documents must satisfy before TiledWriter sees them.

The rule (docs/explanation/decisions/0001-the-document-gate.rst): every stream that is valid
under event-model's schemas and that a bare TiledWriter stores and reads back correctly is
accepted; what TiledWriter would store wrong or unreadable is refused with a typed error naming
the document, the key and the rule. :func:`check_document` checks one document on its own;
a :class:`RunGate` checks one run's documents against what that run declared before (it is the
per-run state of a pipeline built on ``event_model.RunRouter``, and dies with the run).

Documents reach a ``RunGate`` as a ``RunRouter`` passes them on: events as event pages and
datums as datum pages.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ..core._errors import AnalysisInputError, AnalysisStoreError, NestingTooDeepError
from ..core._paths import check_name
from ..core._values import beyond_int64, beyond_json_integers, find_nonfinite


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

#: Documents TiledWriter keeps as node metadata (their numbers pass its JSON clamping).
_METADATA_DOCUMENTS = frozenset({"start", "stop", "descriptor", "resource", "stream_resource"})

#: Specs for which TiledWriter supplies the dataset inside an HDF5 file when a resource lacks it.
_SPECS_WITH_DEFAULT_DATASET = frozenset(
    {"AD_HDF5", "AD_HDF5_SINGLE", "AD_HDF5_SWMR", "HDF5", "XSP", "XSP3", "TPX_HDF5"}
)

HDF5_MIMETYPE = "application/x-hdf5"


def document_id(name: str, doc: Any) -> str:
    """``"event document 'UID'"``: how errors name a document."""
    ident = doc.get("uid", doc.get("datum_id")) if isinstance(doc, Mapping) else None
    return f"{name} document" + (f" {ident!r:.80}" if ident is not None else "")


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


def document_names() -> list[str]:
    """The document names the gate takes (event-model's, but for the bulk ones)."""
    from event_model import DocumentNames

    return sorted(n.value for n in DocumentNames if not n.value.startswith("bulk_"))


def check_document(name: Any, doc: Any) -> None:
    """Check one document on its own: a known name, the event-model schema, finite numbers and
    safe stream and data key names.

    Raises
    ------
    InvalidDocumentError
        Naming the document, the field and what is accepted.
    """
    # ``name`` and ``doc`` stay Any, not event-model's TypedDicts: they come from outside, and
    # finding out whether they are a document is this function's job
    from jsonschema.exceptions import ValidationError  # type: ignore[import-untyped]

    from ..core._documents import validate_document

    names = document_names()
    if not isinstance(name, str) or name not in names:
        raise InvalidDocumentError(f"document name {name!r:.80} is not one of {names}")
    if not isinstance(doc, Mapping):
        raise InvalidDocumentError(f"a {name} document must be a mapping; got {type(doc).__name__}")
    what = document_id(name, doc)
    for key in doc:
        if not isinstance(key, str):
            raise InvalidDocumentError(f"{what} has a field named {key!r:.80}; names are strings")
    try:  # first: it also refuses a tree too deep for anything below that walks it recursively
        nonfinite = find_nonfinite(doc, name)
    except NestingTooDeepError as error:
        raise InvalidDocumentError(f"{what}: {error}") from None
    beyond = beyond_json_integers(doc, name) if name in _METADATA_DOCUMENTS else None
    if nonfinite is not None:
        raise InvalidDocumentError(
            f"{what}: {nonfinite} is NaN or infinity, which a JSON document cannot carry; write "
            "such values to a file (an external data key) or replace them"
        )
    if beyond is not None:
        raise InvalidDocumentError(
            f"{what}: {beyond} is a whole number beyond ±(2**53 - 1), which TiledWriter would "
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


def is_streamed(spec: Any) -> bool:
    """Whether a data key lives in stream resources (``external: "STREAM:"``)."""
    external = spec.get("external") if isinstance(spec, Mapping) else None
    return isinstance(external, str) and external.startswith("STREAM:")


def _hdf5_dataset(parameters: Mapping[str, Any]) -> Any:
    """The dataset parameter, as TiledWriter reads it (``path`` before ``dataset``)."""
    return parameters.get("path", parameters.get("dataset"))


def _is_dataset(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip("/"))


def _has_dataset(parameters: Mapping[str, Any]) -> bool:
    return _is_dataset(_hdf5_dataset(parameters))


class RunGate:
    """What one open run has declared so far, and the checks of its next document.

    Parameters
    ----------
    uid : str
        The run's start uid.
    spec_to_mimetype : mapping
        The mimetypes TiledWriter converts legacy resources with (ours over its defaults).
    """

    def __init__(self, uid: str, spec_to_mimetype: Mapping[str, str]) -> None:
        self.uid = uid
        self._spec_to_mimetype = spec_to_mimetype
        self.descriptors: dict[str, Mapping[str, Any]] = {}  # uid -> data_keys
        self.stream_names: dict[str, str] = {}  # descriptor uid -> stream name
        self.resources: dict[str, Mapping[str, Any]] = {}  # uid -> resource document
        self.stream_resources: dict[str, str] = {}  # uid -> the data key it holds
        self.datums: set[str] = set()
        #: datum ids events referred to before the datum arrived (TiledWriter waits for them
        #: until the stop)
        self.awaited_datums: set[str] = set()
        self.refused: list[str] = []  # why documents of this run were refused
        self.rows: dict[str, int] = {}  # descriptor uid -> events received
        self.stream_rows: dict[tuple[str, str], int] = {}  # (descriptor, stream resource) -> rows
        self.external: dict[str, bool] = {}  # data key name -> external (in every stream)
        #: descriptor uid -> its stream-resource keys that its events carry datum ids for
        #: (legacy producers declare ``external: STREAM:`` and send Resource/Datum)
        self.streamed_in_events: dict[str, set[str]] = {}
        self.closed = False

    # ------------------------------------------------------------------ what it knows

    def owns(self, doc: Any) -> bool:
        """Whether ``doc`` names (through ``run_start`` or a link) something of this run."""
        if not isinstance(doc, Mapping):
            return False
        if doc.get("run_start") == self.uid:
            return True
        return any(
            isinstance(doc.get(link), str) and doc[link] in known
            for link, known in (
                ("descriptor", self.descriptors),
                ("resource", self.resources),
                ("stream_resource", self.stream_resources),
            )
        )

    def poison(self, reason: str) -> None:
        """A document of this run was refused: see :meth:`check`."""
        if len(self.refused) < 5:
            self.refused.append(reason[:300])

    def received(self) -> dict[str, int]:
        """Whole rows received per stream. A row counts once every part of it arrived: its
        event, unless every key of the stream is in stream resources (``external: STREAM:``;
        such a stream may come without events), and its slice of each of those keys."""
        counts: dict[str, int] = {}
        for descriptor, name in self.stream_names.items():
            keys = self.descriptors[descriptor]
            in_events = self.streamed_in_events.get(descriptor, set())
            streamed = {k for k, spec in keys.items() if is_streamed(spec)} - in_events
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

    def events_received(self) -> dict[str, int]:
        """Events received per stream (what event-model's ``compose_run`` counts)."""
        counts: dict[str, int] = {}
        for descriptor, name in self.stream_names.items():
            counts[name] = counts.get(name, 0) + self.rows.get(descriptor, 0)
        return counts

    # ------------------------------------------------------------------ checks

    def check(self, name: str, doc: Mapping[str, Any]) -> None:
        """Raise :class:`InvalidDocumentError` unless ``doc`` (checked on its own already by
        :func:`check_document`) may be written next in this run."""
        what = document_id(name, doc)
        self._check_not_poisoned(what, name, doc)
        if name in ("descriptor", "resource", "stream_resource") and (
            doc["uid"] in self.descriptors
            or doc["uid"] in self.resources
            or (doc["uid"] in self.stream_resources)
        ):
            raise InvalidDocumentError(f"{what}: this uid was already sent")
        if name == "stop":
            self._check_rows(what, doc)
        elif name == "descriptor":
            self._check_key_kinds(what, doc)
        elif name == "stream_resource":
            if doc["mimetype"] == HDF5_MIMETYPE and not _has_dataset(doc["parameters"]):
                raise self._no_dataset(what, "parameters['dataset']", doc["parameters"])
        elif name == "datum_page":
            self._check_datum_page(what, doc)
        elif name == "stream_datum":
            self._check_stream_datum(what, doc)
        elif name == "event_page":
            self._check_event_page(what, doc)

    def _check_not_poisoned(self, what: str, name: str, doc: Mapping[str, Any]) -> None:
        """After a refused document, a run may only end with a stop that does not claim
        success: it must never look complete without that document."""
        if not self.refused or (name == "stop" and doc.get("exit_status") != "success"):
            return
        raise InvalidDocumentError(
            f"{what}: run {self.uid} lost document(s) that were refused earlier "
            f"({'; '.join(self.refused[:2])}); its other documents are refused so that it never "
            "looks complete. Close it with a stop whose exit_status is 'fail' or 'abort', or "
            "send the whole run again under a new uid"
        )

    def _check_key_kinds(self, what: str, descriptor: Mapping[str, Any]) -> None:
        """TiledWriter keeps one kind per data key name in a run (external or in the events);
        a descriptor that flips one would be refused by tiled halfway through the run."""
        for key, spec in descriptor["data_keys"].items():
            external = "external" in spec
            if self.external.get(key, external) != external:
                here, before = ("in a file", "inside the events")[:: 1 if external else -1]
                raise InvalidDocumentError(
                    f"{what}: data key {key!r} is {here} in stream {descriptor['name']!r} but "
                    f"{before} in an earlier stream of run {self.uid}; a run keeps one kind per "
                    "key name: rename the key"
                )

    @staticmethod
    def _no_dataset(what: str, field: str, parameters: Mapping[str, Any]) -> InvalidDocumentError:
        return InvalidDocumentError(
            f"{what}: an HDF5 file needs its dataset, the path of the data inside the file "
            f"(for instance '/data'), in {field}; got {dict(parameters)!r:.160}"
        )

    def _mimetype(self, spec: str) -> str:
        from bluesky_tiled_plugins.writing.tiled_writer import MIMETYPE_LOOKUP

        # the mapping TiledWriter converts a resource with: its defaults, then ours
        return self._spec_to_mimetype.get(spec) or MIMETYPE_LOOKUP.get(spec, "")

    def _dataset_pending(self, resource: Mapping[str, Any]) -> bool:
        """An HDF5 resource whose dataset must come with each datum (TiledWriter merges the
        first datum's kwargs into the stream resource it makes)."""
        return (
            resource["spec"].upper() not in _SPECS_WITH_DEFAULT_DATASET
            and self._mimetype(resource["spec"].upper()) == HDF5_MIMETYPE
            and not _has_dataset(resource["resource_kwargs"])
        )

    def _check_datum_page(self, what: str, doc: Mapping[str, Any]) -> None:
        resource = self.resources.get(doc["resource"])
        if resource is None:
            raise InvalidDocumentError(
                f"{what}: 'resource' is not a resource document of run "
                f"{self.uid}; send the resource before its datums"
            )
        if self._dataset_pending(resource):
            kwargs = doc["datum_kwargs"]
            datasets = _hdf5_dataset(kwargs)
            rows = len(doc["datum_id"])
            if (
                not isinstance(datasets, list)
                or len(datasets) != rows
                or not all(map(_is_dataset, datasets))
            ):
                raise self._no_dataset(
                    what,
                    "resource_kwargs['dataset'] or each datum's datum_kwargs['dataset']",
                    kwargs,
                )

    def _check_stream_datum(self, what: str, doc: Mapping[str, Any]) -> None:
        if doc["stream_resource"] not in self.stream_resources:
            raise InvalidDocumentError(f"{what}: 'stream_resource' is no stream resource")
        if doc["descriptor"] not in self.descriptors:
            raise InvalidDocumentError(
                f"{what} refers to descriptor {doc['descriptor']!r:.80}, not one of its run's"
            )
        indices, seq_nums = doc["indices"], doc["seq_nums"]
        # event-model's composer leaves seq_nums at 0..0 (untracked); TiledWriter reads indices
        untracked = seq_nums["start"] == seq_nums["stop"] == 0
        if not (0 <= indices["start"] <= indices["stop"]) or (
            not untracked
            and seq_nums["stop"] - seq_nums["start"] != indices["stop"] - indices["start"]
        ):
            raise InvalidDocumentError(
                f"{what}: indices {indices} and seq_nums {seq_nums} must be ranges of one "
                "length with 0 <= start <= stop (or seq_nums 0..0, untracked)"
            )

    def _check_rows(self, what: str, stop: Mapping[str, Any]) -> None:
        """A stop claiming success may not claim rows that never arrived: documents would be
        missing (or come after the stop). It may count fewer: event-model's ``compose_run``
        counts events only, so a stream made of stream datums alone says 0."""
        claimed = stop.get("num_events") or {}
        if stop.get("exit_status") != "success" or not isinstance(claimed, Mapping):
            return
        if self.awaited_datums:
            raise InvalidDocumentError(
                f"{what} claims success, but events of this run refer to datums that never "
                f"arrived ({sorted(self.awaited_datums)[:3]!r:.200}); the run is left without a "
                "stop, so it does not look complete"
            )
        received = self.received()
        missing = {s: n for s, n in claimed.items() if n > received.get(s, 0)}
        if missing:
            raise InvalidDocumentError(
                f"{what} claims success with num_events {dict(claimed)!r:.200}, but this run "
                f"received {received!r:.200}: documents are missing or were sent out of order "
                "(every event before the stop); the run is left without a stop, so it does not "
                "look complete"
            )

    def _check_event_page(self, what: str, doc: Mapping[str, Any]) -> None:
        data_keys = self.descriptors.get(doc["descriptor"])
        if data_keys is None:
            raise InvalidDocumentError(
                f"{what} refers to descriptor {doc['descriptor']!r:.80}, not one of run "
                f"{self.uid}'s; send the descriptor before its events"
            )
        required = {key for key, spec in data_keys.items() if not is_streamed(spec)}
        # a stream-resource key may come with datum ids in the events (legacy producers)
        expected = required | (set(doc["data"]) & set(data_keys))
        for field in ("data", "timestamps"):
            if set(doc[field]) != expected:
                raise InvalidDocumentError(
                    f"{what}: {field} has keys {sorted(doc[field])!r:.200} but its descriptor "
                    f"declares {sorted(required)!r:.200}; an event carries every (non-stream) "
                    "data key of its descriptor, no more"
                )
        filled = doc.get("filled") or {}
        rows = len(doc["seq_num"])
        for key in sorted(expected):
            spec = data_keys[key]
            column = doc["data"][key]
            if len(column) != rows:
                raise InvalidDocumentError(
                    f"{what}: data[{key!r}] has {len(column)} rows, not {rows}"
                )
            external = "external" in spec
            accepted = (str,) if external else _JSON_TYPES.get(spec["dtype"], (object,))
            flags = filled.get(key, False)
            for row, value in enumerate(column):
                is_filled = flags[row] if isinstance(flags, list) and row < len(flags) else flags
                if external and is_filled is True:
                    continue  # the value itself, already read from its file
                wrong_bool = spec["dtype"] in ("number", "integer") and isinstance(value, bool)
                if not isinstance(value, accepted) or (not external and wrong_bool):
                    raise InvalidDocumentError(
                        f"{what}: data[{key!r}] (row {row}) is {value!r:.80}, but its "
                        f"descriptor declares "
                        f"{'a datum id (str)' if external else repr(spec['dtype'])}"
                    )
                if external:
                    continue  # a datum id: it may come later, until the stop
                if (where := beyond_int64(value, f"data[{key!r}]")) is not None:
                    raise InvalidDocumentError(
                        f"{what}: {where} (row {row}) does not fit a 64-bit signed integer, the "
                        "widest an event table holds; send it as a string or a float"
                    )
                if spec["dtype"] == "array":
                    _check_event_array(what, key, row, value, spec)

    # ------------------------------------------------------------------ record

    def record(self, name: str, doc: Mapping[str, Any]) -> None:
        """``doc`` was written: remember what it declared."""
        if name == "descriptor":
            self.descriptors[doc["uid"]] = doc["data_keys"]
            self.stream_names[doc["uid"]] = doc["name"]
            for key, spec in doc["data_keys"].items():
                self.external.setdefault(key, "external" in spec)
        elif name == "event_page":
            descriptor = doc["descriptor"]
            self.rows[descriptor] = self.rows.get(descriptor, 0) + len(doc["seq_num"])
            streamed = {k for k in doc["data"] if is_streamed(self.descriptors[descriptor][k])}
            if streamed:
                self.streamed_in_events.setdefault(descriptor, set()).update(streamed)
            for key, values in doc["data"].items():
                if "external" in self.descriptors[descriptor][key]:
                    filled = (doc.get("filled") or {}).get(key)
                    self.awaited_datums.update(
                        v
                        for row, v in enumerate(values)
                        if v not in self.datums
                        and (filled[row] if isinstance(filled, list) else filled) is not True
                    )
        elif name == "stream_datum":
            pair = (doc["descriptor"], doc["stream_resource"])
            covered = doc["indices"]["stop"] - doc["indices"]["start"]
            self.stream_rows[pair] = self.stream_rows.get(pair, 0) + covered
        elif name == "resource":
            self.resources[doc["uid"]] = doc
        elif name == "stream_resource":
            self.stream_resources[doc["uid"]] = doc["data_key"]
        elif name == "datum_page":
            self.datums.update(doc["datum_id"])
            self.awaited_datums.difference_update(doc["datum_id"])
        elif name == "stop":
            self.closed = True


def _check_event_array(what: str, key: str, row: int, value: Any, spec: Mapping[str, Any]) -> None:
    """An array kept inside the events is stored as TiledWriter's declared dtype and shape: refuse
    what it would pad (another shape) or convert (integers read back as float64)."""
    declared = spec.get("shape") or []
    try:
        array = np.asarray(value)
    except ValueError:  # ragged nesting
        array = np.asarray(value, dtype=object)
    ragged = None in declared
    if array.dtype == object and not ragged:
        raise InvalidDocumentError(
            f"{what}: data[{key!r}] (row {row}) is a ragged array, but its descriptor declares "
            f"shape {list(declared)}; give every row that shape, or declare the varying "
            "dimensions as null"
        )
    if not ragged and list(array.shape) != list(declared):
        raise InvalidDocumentError(
            f"{what}: data[{key!r}] (row {row}) has shape {list(array.shape)}, but its "
            f"descriptor declares shape {list(declared)}; TiledWriter would pad it with NaN. "
            "Send arrays of the declared shape (or declare the varying dimensions as null)"
        )
    dtype_numpy = spec.get("dtype_numpy")
    kind = array.dtype.kind
    if dtype_numpy is None and kind in "iub" and array.size:
        raise InvalidDocumentError(
            f"{what}: data[{key!r}] (row {row}) holds {array.dtype} values, but its descriptor "
            "declares no dtype_numpy, so TiledWriter would store them as float64; declare "
            f"dtype_numpy (for instance {array.dtype.str!r})"
        )
    if isinstance(dtype_numpy, str) and np.dtype(dtype_numpy).kind in "iub" and kind in "fc":
        raise InvalidDocumentError(
            f"{what}: data[{key!r}] (row {row}) holds {array.dtype} values, but its descriptor "
            f"declares dtype_numpy {dtype_numpy!r}; TiledWriter would truncate them. Declare a "
            "float dtype_numpy or send integers"
        )
