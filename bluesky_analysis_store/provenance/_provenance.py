"""The provenance model: the single source of truth for what an analysis run records about itself.

Its JSON Schema is generated into ``schemas/provenance.json`` (``python -m
bluesky_analysis_store.provenance._provenance``); a test fails when the two drift apart.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, JsonValue
from pydantic import ValidationError as PydanticValidationError

UID_PATTERN = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
SHA256_PATTERN = r"^[0-9a-f]{64}$"
SCHEMA_PATH = Path(__file__).parents[1] / "schemas" / "provenance.json"
#: Levels of a start document above the parameters (``start["provenance"]["parameters"]``),
#: counted against the nesting limit (``_values.MAX_DEPTH``).
PARAMETERS_DEPTH = 2


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CodeProvenance(_Strict):
    """The code that produced the run."""

    name: str = Field(min_length=1, description="Analysis name, e.g. 'xas_reduction'.")
    version: str | None = Field(None, description="Analysis or package version.")
    module: str | None = Field(None, description="Module that defines the analysis.")
    qualname: str | None = Field(None, description="Qualified name of the function or class.")
    commit: str | None = Field(None, description="Git commit of the checkout holding the code.")
    dirty: bool | None = Field(None, description="True when that checkout had local changes.")
    url: str | None = Field(None, description="Repository or documentation URL.")


class EnvironmentProvenance(_Strict):
    """Where the code ran; not part of the lineage (the same analysis elsewhere is the same)."""

    python: str
    platform: str
    host: str
    user: str
    packages: dict[str, str] = Field(default_factory=dict, description="Key package versions.")


class ParentRun(_Strict):
    """A run the analysis read."""

    uid: str = Field(pattern=UID_PATTERN, description="The parent run's start uid.")
    catalog: str | None = Field(None, description="Where the parent lives (URI or name).")
    lineage_hash: str | None = Field(
        None, pattern=SHA256_PATTERN, description="The parent's lineage hash, if an analysis run."
    )


class InputFile(_Strict):
    """A file the analysis read, with the checksum it had."""

    path: str = Field(min_length=1)
    size: int = Field(ge=0)
    sha256: str = Field(pattern=SHA256_PATTERN)
    mtime: float


class LooseMatch(_Strict):
    """A parent reused by loose matching (``bas reprocess``): a stored run accepted although its
    lineage differs from the one asked for in what ``ignored`` names."""

    uid: str = Field(pattern=UID_PATTERN, description="The parent run reused.")
    ignored: tuple[str, ...] = Field(
        description="What it was allowed to differ in, e.g. 'version of normalize_and_bin'."
    )


class Provenance(_Strict):
    """What produced an analysis run: code, environment, parents, input files, parameters, time.

    Build it with :func:`~bluesky_analysis_store.capture_provenance`, which fills what it can
    find by itself.
    """

    schema_version: Literal[1] = 1
    code: CodeProvenance
    environment: EnvironmentProvenance | None = None
    parents: tuple[ParentRun, ...] = ()
    inputs: tuple[InputFile, ...] = ()
    parameters: dict[str, JsonValue] = Field(
        default_factory=dict, description="The analysis' configuration (JSON-safe)."
    )
    created: AwareDatetime = Field(default_factory=lambda: datetime.now(UTC))
    loose_matches: tuple[LooseMatch, ...] = Field(
        default=(),
        description="Parents reused by loose matching, and what was ignored (not lineage).",
    )

    @property
    def parent_uids(self) -> list[str]:
        """The uids of the parent runs, in the order given."""
        return [parent.uid for parent in self.parents]

    def lineage_hash(self) -> str:
        """See :func:`lineage_hash`."""
        return lineage_hash(self)


def canonical_json(value: Any) -> str:
    """JSON with sorted keys, no whitespace and no NaN: equal values give equal text everywhere."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    )


def lineage_hash(provenance: Provenance) -> str:
    """The identity of "this analysis, this version, these parameters, these parents".

    SHA-256 of the canonical JSON of the analysis name and version, the parameters, the set of
    parent runs (each parent's uid and, when the parent is itself an analysis run, its own lineage
    hash) and the set of input files by content (SHA-256 and size: the same bytes under another
    path are the same input, different bytes under the same path are not). Host, user, time,
    environment, input-file paths and modification times, and the commit are not part of it:
    they say where and when, not what. Parents and inputs are sets: encode roles such as
    "background" in the parameters.
    """
    parents = {
        canonical_json({"uid": p.uid.lower(), "lineage_hash": p.lineage_hash})
        for p in provenance.parents
    }
    inputs = {canonical_json({"sha256": i.sha256, "size": i.size}) for i in provenance.inputs}
    identity = {
        "analysis": provenance.code.name,
        "version": provenance.code.version,
        "parameters": provenance.parameters,
        "parents": sorted(parents),
        "inputs": sorted(inputs),
    }
    return hashlib.sha256(canonical_json(identity).encode("ascii")).hexdigest()


def provenance_json_schema() -> dict[str, Any]:
    """The JSON Schema of :class:`Provenance`, as committed in ``schemas/provenance.json``."""
    return Provenance.model_json_schema(mode="validation")


def write_json_schema(path: Path = SCHEMA_PATH) -> None:
    """Regenerate the committed schema file from the model."""
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(provenance_json_schema(), indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    write_json_schema()
    print(f"wrote {SCHEMA_PATH}")


def provenance_problem(metadata: Mapping[str, Any] | None) -> str | None:
    """Why a run's metadata lacks valid provenance, or None when it has it."""
    start = (metadata or {}).get("start")
    if not isinstance(start, Mapping):
        return "metadata['start'] (the start document) is missing"
    record = start.get("provenance")
    if not isinstance(record, Mapping):
        return "start['provenance'] is missing; analysis runs must record their provenance"
    try:
        provenance = Provenance.model_validate(record)
    except PydanticValidationError as error:
        details = "; ".join(
            f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors()[:5]
        )
        return f"start['provenance'] is invalid: {details}"
    if start.get("lineage_hash") != provenance.lineage_hash():
        return "start['lineage_hash'] is missing or does not match start['provenance']"
    if start.get("parent_uids") != provenance.parent_uids:
        return "start['parent_uids'] is missing or does not match start['provenance']"
    return None
