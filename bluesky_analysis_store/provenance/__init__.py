"""Provenance: the model and its lineage hash, capture, policy, sample metadata packets, start
metadata and the content hash."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..core._lazy import lazy_exports

_EXPORTS = {
    "capture_code": "._capture",
    "capture_environment": "._capture",
    "capture_provenance": "._capture",
    "describe_input_file": "._capture",
    "describe_parent": "._capture",
    "content_hash": "._content",
    "ProvenancePolicy": "._policy",
    "CodeProvenance": "._provenance",
    "EnvironmentProvenance": "._provenance",
    "InputFile": "._provenance",
    "LooseMatch": "._provenance",
    "ParentRun": "._provenance",
    "Provenance": "._provenance",
    "lineage_hash": "._provenance",
    "MetadataPacket": "._samples",
    "new_sample_uuid": "._samples",
}

if not TYPE_CHECKING:  # mypy reads the names from the imports below (a star import too)
    __all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:
    from ._capture import (
        capture_code,
        capture_environment,
        capture_provenance,
        describe_input_file,
        describe_parent,
    )
    from ._content import content_hash
    from ._policy import ProvenancePolicy
    from ._provenance import (
        CodeProvenance,
        EnvironmentProvenance,
        InputFile,
        LooseMatch,
        ParentRun,
        Provenance,
        lineage_hash,
    )
    from ._samples import MetadataPacket, new_sample_uuid
