"""The start document's metadata: the caller's ``md``, the sample packet and the provenance."""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from typing import Any

from ..core._errors import AnalysisInputError
from ..core._values import beyond_json_integers, check_depth, find_in_tree, short_repr
from ._policy import ProvenancePolicy
from ._provenance import Provenance
from ._samples import MetadataPacket

#: Start-document keys that compose_analysis_run sets itself.
RESERVED_MD_KEYS = frozenset({"uid", "time", "content_hash"})
#: Keys carrying provenance: the full record and the top-level copies people query by.
PROVENANCE_KEYS = frozenset(
    {
        "provenance",
        "provenance_policy",
        "analysis_name",
        "analysis_version",
        "parent_uids",
        "lineage_hash",
    }
)


def check_md(md: Any) -> dict[str, Any]:
    """A deep copy of ``md`` after checking it is a JSON-serializable mapping without our keys,
    nested at most :data:`~bluesky_analysis_store.core._values.MAX_DEPTH` levels deep."""
    if not isinstance(md, Mapping):
        raise AnalysisInputError(
            f"md must be a mapping for the start document; got {short_repr(md)}"
        )
    check_depth(md, "md")  # first: every later check (and json, deepcopy) recurses
    if (where := find_in_tree(dict(md), "md", key=lambda k: not isinstance(k, str))) is not None:
        raise AnalysisInputError(
            f"{where} is not a string; the start document's keys are strings (JSON would turn "
            "the key into one, and the run would read back changed)"
        )
    reserved = (RESERVED_MD_KEYS | PROVENANCE_KEYS) & set(md)
    if reserved:
        raise AnalysisInputError(
            f"md sets {sorted(reserved)}, which compose_analysis_run sets itself; pass uid=... "
            "to choose the run's uid, and provenance=... for the provenance keys"
        )
    for key, value in md.items():
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError) as error:
            raise AnalysisInputError(
                f"md[{key!r}] = {short_repr(value)} is not JSON-serializable ({error}); the start "
                "document accepts str, int, float (finite), bool, None, lists and dicts of those"
            ) from None
        if (where := beyond_json_integers(value, f"md[{key!r}]")) is not None:
            raise AnalysisInputError(
                f"{where} is a whole number beyond ±(2**53 - 1), which tiled stores clamped "
                "(it would read back changed); give it as a string"
            )
    return copy.deepcopy(dict(md))


def provenance_metadata(provenance: Provenance, policy: ProvenancePolicy) -> dict[str, Any]:
    """The provenance keys of a start document: the record, and copies to query by."""
    return {
        "provenance": provenance.model_dump(mode="json"),
        "provenance_policy": policy.as_metadata(),
        "analysis_name": provenance.code.name,
        "analysis_version": provenance.code.version,
        "parent_uids": provenance.parent_uids,
        "lineage_hash": provenance.lineage_hash(),
    }


def start_metadata(
    md: Any,
    provenance: Provenance,
    policy: ProvenancePolicy,
    packet: MetadataPacket | None = None,
) -> dict[str, Any]:
    """Merge the sample packet, ``md`` and the provenance keys; refuse any overlap."""
    metadata = check_md(md)
    packet_md = check_md(packet.as_metadata()) if packet is not None else {}
    overlap = sorted(set(packet_md) & set(metadata))
    if overlap:
        raise AnalysisInputError(
            f"md and the metadata packet both set {overlap}; set each key in one place "
            "(sample keys through packet.set_sample)"
        )
    return {**packet_md, **metadata, **provenance_metadata(provenance, policy)}
