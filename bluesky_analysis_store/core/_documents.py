"""Event-model documents checked against event-model's own schemas."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ._errors import AnalysisInputError


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
