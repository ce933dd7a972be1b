"""Event-model documents: the project's one set of their type names, and their schema check.

The types are event-model's own TypedDicts (``event_model.documents``), imported for the type
checker only: ``event_model`` is slow to import, and ``import bluesky_analysis_store`` stays
light. Import them likewise, under ``TYPE_CHECKING``.

A start document of ours carries keys event-model's ``RunStart`` does not declare
(``provenance``, ``analysis_name``, ``parent_uids``, ``lineage_hash``, ``content_hash``, ...;
the schema allows extra keys, the TypedDict does not name them): read them with ``.get``, or
through ``Mapping[str, Any]`` where a missing key is an error.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from ._errors import AnalysisInputError

if TYPE_CHECKING:
    from typing import TypeAlias

    from event_model.documents import Datum as Datum
    from event_model.documents import DatumPage as DatumPage
    from event_model.documents import Document as Document
    from event_model.documents import Event as Event
    from event_model.documents import EventDescriptor as EventDescriptor
    from event_model.documents import EventPage as EventPage
    from event_model.documents import Resource as Resource
    from event_model.documents import RunStart as RunStart
    from event_model.documents import RunStop as RunStop
    from event_model.documents import StreamDatum as StreamDatum
    from event_model.documents import StreamResource as StreamResource

    #: One ``(name, doc)`` pair, as a run's documents are listed and iterated (``ComposedRun``).
    NamedDocument: TypeAlias = tuple[str, Document]

    #: A document subscriber (a RunEngine callback, ``AnalysisStore.insert``, a TiledWriter).
    Subscriber: TypeAlias = Callable[[str, Document], Any]

    class AnalysisStart(RunStart):
        """The start document of a run this package composes: event-model's keys and the
        provenance keys (``provenance._start_metadata``) and ``content_hash``."""

        provenance: dict[str, Any]
        provenance_policy: dict[str, Any]
        analysis_name: str
        analysis_version: str
        parent_uids: list[str]
        lineage_hash: str
        content_hash: str


def _page_rows(page: Mapping[str, Any], rows: list[int]) -> dict[str, Any]:
    """The same page with only ``rows`` (columns of lists and of dicts of lists sliced)."""

    def take(column: Any) -> Any:
        if isinstance(column, dict):
            return {key: take(value) for key, value in column.items()}
        return [column[row] for row in rows]

    return {key: take(value) if key != "descriptor" else value for key, value in page.items()}


def _column_lengths(column: Any) -> set[int]:
    if isinstance(column, dict):
        return {n for value in column.values() for n in _column_lengths(value)}
    return {len(column)}


def validate_document(name: str, doc: Mapping[str, Any]) -> None:
    """``event_model.schema_validators`` for one document, event pages by structure.

    An event page holds thousands of rows built by one loop from values whose types were each
    checked while planning; validating every row again costs more than inserting the run. The
    page is validated with its first and last rows, after checking that every column has the
    same length (what the schema's per-row checks would otherwise catch).
    """
    if name == "event_page" and len(doc["seq_num"]) > 2:
        columns = {key: value for key, value in doc.items() if key != "descriptor"}
        lengths = {n for column in columns.values() for n in _column_lengths(column)}
        if len(lengths) != 1:
            raise AnalysisInputError(f"event page columns differ in length: {sorted(lengths)}")
        doc = _page_rows(doc, [0, len(doc["seq_num"]) - 1])
    from event_model import DocumentNames, schema_validators

    schema_validators[DocumentNames[name]].validate(doc)
