"""SciCat export: the body of a derived dataset and of its OrigDatablock (the file list with
checksums), which a facility posts to its own SciCat (``POST /Datasets``, then
``POST /OrigDatablocks`` with the new dataset's ``pid`` as ``datasetId``).

What is written is validated by our pydantic models of those bodies (``extra="forbid"``): a
misspelt field fails at once instead of being dropped by a catalogue later. The field map is in
docs/how-to/export-provenance.rst.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from ..core._errors import AnalysisInputError
from ..core._names import DEFAULT_PID_TEMPLATE
from ..core._version import __version__
from ._record import FileRecord, ProvenanceRecord, RunRecord, gather

if TYPE_CHECKING:
    from ..store._store import AnalysisStore


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataFile(_Body):
    """One entry of an OrigDatablock's ``dataFileList``."""

    path: str = Field(min_length=1, description="Relative to the dataset's sourceFolder.")
    size: int = Field(ge=0)
    time: str = Field(description="Modification time, ISO 8601.")
    chk: str = Field(description="The checksum (chkAlg).")


class OrigDatablock(_Body):
    """The files of the dataset (its ``datasetId`` is the pid SciCat gives the dataset)."""

    size: int = Field(ge=0)
    chkAlg: Literal["sha256"] = "sha256"  # noqa: N815 (SciCat's field name)
    ownerGroup: str  # noqa: N815
    accessGroups: list[str] = Field(default_factory=list)  # noqa: N815
    dataFileList: list[DataFile]  # noqa: N815


class DerivedDataset(_Body):
    """A SciCat derived dataset (the fields this export fills)."""

    type: Literal["derived"] = "derived"
    datasetName: str  # noqa: N815
    description: str
    owner: str
    ownerGroup: str  # noqa: N815
    accessGroups: list[str] = Field(default_factory=list)  # noqa: N815
    contactEmail: str  # noqa: N815
    investigator: str
    creationTime: str  # noqa: N815
    sourceFolder: str  # noqa: N815
    size: int = Field(ge=0)
    numberOfFiles: int = Field(ge=0)  # noqa: N815
    inputDatasets: list[str]  # noqa: N815
    usedSoftware: list[str]  # noqa: N815
    jobParameters: dict[str, JsonValue]  # noqa: N815
    keywords: list[str] = Field(default_factory=list)
    scientificMetadata: dict[str, JsonValue]  # noqa: N815


class ScicatExport(_Body):
    """What ``bas export --format scicat`` writes: the dataset and its datablock."""

    dataset: DerivedDataset
    origDatablock: OrigDatablock  # noqa: N815


def export_scicat(
    store: AnalysisStore,
    uid: str,
    *,
    owner_group: str,
    contact_email: str,
    owner: str | None = None,
    investigator: str | None = None,
    pid_template: str = DEFAULT_PID_TEMPLATE,
) -> ScicatExport:
    """The SciCat derived dataset of analysis run ``uid``.

    Parameters
    ----------
    store : AnalysisStore
        The store holding the run (its raw catalog, if open, gives the raw runs' start
        documents to ``pid_template``).
    uid : str
        The analysis run.
    owner_group, contact_email : str
        SciCat's ``ownerGroup`` and ``contactEmail`` (required by SciCat).
    owner, investigator : str, optional
        Default: the user who ran the analysis (its provenance).
    pid_template : str
        How the facility names a raw run in SciCat: a :meth:`str.format` template over the raw
        run's start document (e.g. ``"20.500.12269/{uid}"`` or ``"{proposal_id}/{scan_id}"``).

    Raises
    ------
    AnalysisInputError
        A raw run asked for, or a template field a raw run's start document lacks.
    NotFoundError
        No such run.
    """
    record = gather(store, uid, recursive=True, files_of_focus_only=True)
    return scicat_body(
        record,
        owner_group=owner_group,
        contact_email=contact_email,
        owner=owner,
        investigator=investigator,
        pid_template=pid_template,
    )


def scicat_body(
    record: ProvenanceRecord,
    *,
    owner_group: str,
    contact_email: str,
    owner: str | None = None,
    investigator: str | None = None,
    pid_template: str = DEFAULT_PID_TEMPLATE,
) -> ScicatExport:
    """:func:`export_scicat` of a gathered (recursive) record."""
    run = record.focus_run
    provenance = run.provenance
    if provenance is None:
        raise AnalysisInputError(
            f"run {run.uid} is a {run.kind} run; a SciCat derived dataset describes an analysis run"
        )
    user = provenance.environment.user if provenance.environment is not None else None
    owner = owner or user
    if not owner:
        raise AnalysisInputError(f"run {run.uid} records no user: give the owner (--owner)")
    folder, files = _source_folder(record, run.derived_files)
    code = provenance.code
    software = [f"{code.name} {code.version or '(no version)'}"]
    software += [f"git commit {code.commit}"] if code.commit else []
    software += [code.url] if code.url else []
    software.append(f"bluesky-analysis-store {__version__}")
    size = sum(file.size for file in files.values())
    created = run.time if run.time is not None else provenance.created.timestamp()
    start = run.start
    dataset = {
        "type": "derived",
        "datasetName": f"{run.label} ({run.uid})",
        "description": f"analysis {run.label} of {', '.join(run.parents) or 'input files'}",
        "owner": owner,
        "ownerGroup": owner_group,
        "contactEmail": contact_email,
        "investigator": investigator or owner,
        "creationTime": _iso(created),
        "sourceFolder": folder,
        "size": size,
        "numberOfFiles": len(files),
        "inputDatasets": [
            _pid(pid_template, r)
            for r in record.runs.values()
            if r.kind == "raw" or _raw_missing(r, record)
        ],
        "usedSoftware": software,
        "jobParameters": dict(provenance.parameters),
        "keywords": ["bluesky-analysis-store", code.name],
        "scientificMetadata": {
            "run_uid": run.uid,
            "lineage_hash": run.lineage_hash,
            "content_hash": start.get("content_hash"),
            "analysis_name": code.name,
            "analysis_version": code.version,
            "parent_uids": run.parents,
            "input_files": [
                {"path": f.path, "sha256": f.sha256, "size": f.size} for f in run.input_files
            ],
            "provenance_time": provenance.created.isoformat(),
            **{key: start[key] for key in ("sample_name", "sample_uuid") if key in start},
        },
    }
    datablock = {
        "size": size,
        "chkAlg": "sha256",
        "ownerGroup": owner_group,
        "dataFileList": [
            {
                "path": path,
                "size": file.size,
                "time": _iso(file.mtime if file.mtime is not None else created),
                "chk": file.sha256,
            }
            for path, file in files.items()
        ],
    }
    return ScicatExport.model_validate({"dataset": dataset, "origDatablock": datablock})


def _raw_missing(run: RunRecord, record: ProvenanceRecord) -> bool:
    """A parent neither store holds, with no lineage hash recorded: a raw run of a catalog this
    store was not opened with (an analysis parent would carry its lineage hash)."""
    return run.kind == "missing" and run.lineage_hash is None and run.uid != record.focus


def _pid(template: str, run: RunRecord) -> str:
    fields: Mapping[str, Any] = {**run.start, "uid": run.uid}
    try:
        return template.format(**fields)
    except (KeyError, IndexError, ValueError) as error:
        available = ", ".join(sorted(fields)[:20])
        raise AnalysisInputError(
            f"--pid-template {template!r} cannot name raw run {run.uid}: {error!r} is not in "
            f"its start document{'' if run.start else ' (the raw catalog does not have it)'} "
            f"(fields: {available}); nothing was written"
        ) from None


def _source_folder(
    record: ProvenanceRecord, files: tuple[FileRecord, ...]
) -> tuple[str, dict[str, FileRecord]]:
    """The folder holding the run's files (their common directory under the store's root) and
    each file's path relative to it."""
    if not files:
        return str(record.root), {}
    common = PurePosixPath(os.path.commonpath([PurePosixPath(f.path).parent for f in files]))
    folder = record.root / common
    return str(folder), {PurePosixPath(f.path).relative_to(common).as_posix(): f for f in files}


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat()
