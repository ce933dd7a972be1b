"""What a run's provenance says, gathered once: the one place every export reads from.

:func:`gather` collects, for one run (and with ``recursive`` its whole ancestry, through the
store's own lineage walk), each run's start document and provenance record, and the derived
files of each analysis run with their SHA-256. The PROV, RO-Crate and SciCat exports only
translate this :class:`ProvenanceRecord`; none asks the store anything itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

from ..core._errors import NotFoundError
from ..provenance._capture import sha256_file
from ..provenance._provenance import CodeProvenance, Provenance
from ..provenance._run_kind import is_analysis_run

if TYPE_CHECKING:
    from ..store._store import AnalysisStore

RunKind = Literal["analysis", "raw", "missing"]


@dataclass(frozen=True)
class FileRecord:
    """A file a run read (``input``) or wrote (``derived``), identified by its content.

    ``path`` is relative to the store's root when the file is inside it, else as recorded.
    """

    path: str
    sha256: str
    size: int
    role: Literal["input", "derived"]
    mtime: float | None = None


@dataclass(frozen=True)
class RunRecord:
    """One run: an analysis run (with its provenance), a raw run, or a parent the stores do
    not hold (``missing``: only its uid, and the lineage hash its child recorded)."""

    uid: str
    kind: RunKind
    start: Mapping[str, Any] = field(default_factory=dict)
    provenance: Provenance | None = None
    derived_files: tuple[FileRecord, ...] = ()
    #: the lineage hash a child recorded for this run (used when the run itself is missing)
    recorded_lineage_hash: str | None = None

    @property
    def lineage_hash(self) -> str | None:
        return self.start.get("lineage_hash") or self.recorded_lineage_hash

    @property
    def time(self) -> float | None:
        value = self.start.get("time")
        return float(value) if isinstance(value, int | float) else None

    @property
    def plan_name(self) -> str | None:
        value = self.start.get("plan_name")
        return str(value) if value is not None else None

    @property
    def label(self) -> str:
        """What the lineage graph calls the run: analysis name and version, or plan name."""
        if self.provenance is not None:
            return f"{self.provenance.code.name} {self.provenance.code.version or ''}".strip()
        return self.plan_name or self.kind

    @property
    def code(self) -> CodeProvenance | None:
        return None if self.provenance is None else self.provenance.code

    @property
    def parents(self) -> list[str]:
        return [] if self.provenance is None else self.provenance.parent_uids

    @property
    def input_files(self) -> tuple[FileRecord, ...]:
        if self.provenance is None:
            return ()
        return tuple(
            FileRecord(item.path, item.sha256, item.size, "input", item.mtime)
            for item in self.provenance.inputs
        )


@dataclass(frozen=True)
class ProvenanceRecord:
    """The runs an export describes: ``focus`` first, then its ancestors (all of them when
    gathered ``recursive``, else its direct parents), each once, and the store's root."""

    focus: str
    runs: dict[str, RunRecord]
    root: Path
    recursive: bool

    @property
    def focus_run(self) -> RunRecord:
        return self.runs[self.focus]

    def described(self) -> list[RunRecord]:
        """The analysis runs whose execution the export describes: the focus run, and with
        ``recursive`` every analysis run among its ancestors (else the parents are only
        named)."""
        runs = list(self.runs.values()) if self.recursive else [self.focus_run]
        return [run for run in runs if run.kind == "analysis"]

    def edges(self) -> set[tuple[str, str]]:
        """``(parent, child)`` of every run described with its provenance."""
        return {(parent, run.uid) for run in self.described() for parent in run.parents}


def gather(
    store: AnalysisStore, uid: str, *, recursive: bool = False, files_of_focus_only: bool = False
) -> ProvenanceRecord:
    """Collect what the provenance of run ``uid`` (full or partial) says.

    Parameters
    ----------
    store : AnalysisStore
        The store holding the run (its raw catalog, if open, names the raw parents).
    uid : str
        The run.
    recursive : bool
        Describe every ancestor (the store's lineage walk, :meth:`AnalysisStore.lineage`), not
        only the direct parents.
    files_of_focus_only : bool
        Hash the derived files of the focus run only, even when ``recursive`` (an export that
        walks the ancestry for its raw runs but describes one execution).

    Raises
    ------
    NotFoundError
        When neither the store nor its raw catalog has the run.
    """
    start = store.start_document(uid)
    if start is None:
        raise NotFoundError(f"no run {uid!r} in the analysis store or its raw catalog")
    focus = str(start["uid"])
    if recursive:
        ancestors = store.lineage(focus).ancestors()
    else:
        parents = cast("list[str]", start.get("parent_uids") or [])
        ancestors = list(dict.fromkeys(parents))
    starts = store.start_documents(ancestors) if ancestors else {}
    starts[focus] = start
    recorded = _recorded_parent_hashes([focus, *ancestors], starts)
    runs = {  # derived files (hashed now) only of the runs whose execution is described
        run_uid: _run_record(
            store,
            run_uid,
            starts.get(run_uid),
            recorded.get(run_uid),
            run_uid == focus or (recursive and not files_of_focus_only),
        )
        for run_uid in [focus, *ancestors]
    }
    return ProvenanceRecord(focus, runs, store.root, recursive)


def _recorded_parent_hashes(
    uids: list[str], starts: Mapping[str, Mapping[str, Any]]
) -> dict[str, str]:
    """The lineage hash each parent has in its children's provenance (so that a parent the
    stores do not hold is still described by what its child recorded)."""
    found: dict[str, str] = {}
    for uid in uids:
        record = (starts.get(uid) or {}).get("provenance") or {}
        for parent in record.get("parents", ()):
            if parent.get("lineage_hash"):
                found[parent["uid"]] = parent["lineage_hash"]
    return found


def _run_record(
    store: AnalysisStore,
    uid: str,
    start: Mapping[str, Any] | None,
    recorded: str | None,
    with_files: bool,
) -> RunRecord:
    if start is None:
        return RunRecord(uid, "missing", recorded_lineage_hash=recorded)
    if not is_analysis_run(start):
        return RunRecord(uid, "raw", dict(start))
    provenance = Provenance.model_validate(start["provenance"])
    files = _derived_files(store, uid) if with_files else ()
    return RunRecord(uid, "analysis", dict(start), provenance, files)


def _derived_files(store: AnalysisStore, uid: str) -> tuple[FileRecord, ...]:
    """The files of an analysis run's data sources (the assets fsck walks), with their SHA-256
    computed now (the store records none for derived files); a file not on this machine is
    left out."""
    from ..store._locations import asset_files

    if uid not in store:  # e.g. a raw-catalog run with provenance keys: no assets here
        return ()
    files = []
    for path, is_directory in asset_files(store.runs[uid]):
        members = sorted(p for p in path.rglob("*") if p.is_file()) if is_directory else [path]
        for member in members:
            if not member.is_file():
                continue
            status = member.stat()
            files.append(
                FileRecord(
                    relative_to_root(member, store.root),
                    sha256_file(member),
                    status.st_size,
                    "derived",
                    status.st_mtime,
                )
            )
    unique = {(f.path, f.sha256): f for f in files}  # one file may hold several keys
    return tuple(sorted(unique.values(), key=lambda f: f.path))


def relative_to_root(path: str | Path, root: Path) -> str:
    """``path`` relative to the store's root when it is inside it, else as given (POSIX)."""
    resolved = Path(path).resolve()
    if resolved.is_relative_to(root):
        return resolved.relative_to(root).as_posix()
    return Path(path).as_posix()
