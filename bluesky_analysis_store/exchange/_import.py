"""``bas import-prov``: a PROV-JSON export of ours read into another store's lineage.

Each analysis run the file describes (an entity ``bas:run/<uid>`` of type ``bas:AnalysisRun``
carrying its provenance record) that the receiving store does not have becomes a **lineage
record** there: a run with the original uid, start time and provenance (so the same lineage
hash and parents), no data, and a stop with ``exit_status="abort"`` and a reason, marked
``start["bas_imported"]``. It goes in through the store's own insert path (the document gate,
the provenance check of a served store), and the lineage index picks its edges up from the
catalog like any run's (decision record 0018), so ``store.lineage(uid)`` and ``bas lineage``
show the imported ancestry. Queries for results (``derived_from``, ``with_lineage``, a save's
"already saved?") only see complete runs, so a record is never taken for data.

Everything is checked before anything is written: the file itself (each run's recorded lineage
hash against its provenance, its derivations against its parents) and the store (a run it has
with another lineage hash, other parents or other code, or as a raw run) raise, naming the
entity and the conflicting value. Runs the store already has, unchanged, are skipped.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from ..core._errors import LineageConflictError, ProvenanceError, UnreadableFileError
from ..core._names import BAS_NAMESPACE, IMPORTED_KEY
from ..provenance._provenance import Provenance
from ..provenance._run_kind import is_analysis_run
from ..store._lineage_links import RUN_IRI_PREFIX
from ._prov import BAS_PREFIX, derivations, run_id

if TYPE_CHECKING:
    from prov.model import ProvDocument

    from ..core._documents import RunStart, RunStop
    from ..store._store import AnalysisStore

#: Why an imported record's input files are not verified: they are at the source facility.
_POLICY_REASON = "imported with bas import-prov: the input files stay at the source"


@dataclass(frozen=True)
class ImportedRun:
    """An analysis run as the file describes it."""

    uid: str
    provenance: Provenance
    time: float | None
    plan_name: str | None


@dataclass
class ImportReport:
    """What :func:`import_prov` did: the lineage records written, and the runs the store
    already had (unchanged), each by uid."""

    source: str
    imported: list[str] = field(default_factory=list)
    known: list[str] = field(default_factory=list)

    def as_text(self) -> str:
        lines = [f"imported {len(self.imported)} run(s) from {self.source}"]
        lines += [f"  lineage record {uid}" for uid in self.imported]
        if self.known:
            lines.append(f"already in the store, unchanged: {len(self.known)}")
            lines += [f"  {uid}" for uid in self.known]
        return "\n".join(lines)


def read_prov_file(path: str | Path) -> ProvDocument:
    """The PROV document in a PROV-JSON file.

    Raises
    ------
    UnreadableFileError
        When the file cannot be read or is not PROV-JSON.
    """
    from prov.model import ProvDocument

    try:
        content = Path(path).read_text(encoding="utf-8")
        json.loads(content)  # prov's own reader reports bad JSON less clearly
        return ProvDocument.deserialize(content=content, format="json")
    except (OSError, UnicodeDecodeError, ValueError, TypeError, KeyError) as error:
        raise UnreadableFileError(
            f"{path} cannot be read as PROV-JSON ({type(error).__name__}: {error}); nothing "
            "was imported"
        ) from None


def _entity(uid: str) -> str:
    return f"bas:{run_id(uid)}"


def described_runs(document: ProvDocument) -> dict[str, ImportedRun]:
    """The analysis runs a PROV document of ours describes, checked against themselves.

    Raises
    ------
    ProvenanceError
        When a run's recorded lineage hash or its derivations contradict its own provenance
        record, or the record is malformed (the message names the entity).
    """
    from prov.model import ProvEntity

    runs: dict[str, ImportedRun] = {}
    for entity in document.get_records(ProvEntity):
        attributes = {str(key.uri): value for key, value in entity.attributes}
        record = attributes.get(BAS_NAMESPACE + "provenance")
        if record is None:  # a raw run, a file, or a run only named
            continue
        name = f"bas:{str(entity.identifier).removeprefix(f'{BAS_PREFIX}:')}"
        try:
            provenance = Provenance.model_validate_json(str(record))
        except ValueError as error:
            raise ProvenanceError(f"{name}: its provenance record is malformed: {error}") from None
        uid = str(attributes.get(BAS_NAMESPACE + "uid"))
        if name != _entity(uid):
            raise ProvenanceError(f"{name}: its bas:uid {uid!r} names another run")
        recorded = attributes.get(BAS_NAMESPACE + "lineage_hash")
        if recorded != provenance.lineage_hash():
            raise ProvenanceError(
                f"{name}: bas:lineage_hash {recorded!r} is not its provenance's "
                f"{provenance.lineage_hash()!r}"
            )
        time = attributes.get(BAS_NAMESPACE + "time")
        plan = attributes.get(BAS_NAMESPACE + "plan_name")
        runs[uid] = ImportedRun(
            uid,
            provenance,
            time.timestamp() if isinstance(time, datetime) else None,
            None if plan is None else str(plan),
        )
    _check_derivations(document, runs)
    return runs


def _check_derivations(document: ProvDocument, runs: Mapping[str, ImportedRun]) -> None:
    """Each ``wasDerivedFrom`` between runs must be a parent in the child's provenance, and a
    run whose execution the file describes must list all its parents so."""
    parents: dict[str, set[str]] = {}
    for child, _, parent in derivations(document):
        parents.setdefault(child.removeprefix(RUN_IRI_PREFIX), set()).add(
            parent.removeprefix(RUN_IRI_PREFIX)
        )
    described = {
        str(activity.identifier.uri).removeprefix(BAS_NAMESPACE + "execution/")
        for activity in _activities(document)
    }
    for uid, run in runs.items():
        found = parents.get(uid, set())
        if uid in described and found != set(run.provenance.parent_uids):
            raise ProvenanceError(
                f"{_entity(uid)}: wasDerivedFrom {sorted(found)} but its provenance names "
                f"parents {sorted(run.provenance.parent_uids)}"
            )
    for uid in set(parents) - described:
        raise ProvenanceError(f"{_entity(uid)}: derivations without its execution")


def _activities(document: ProvDocument) -> list[Any]:
    from prov.model import ProvActivity

    return list(document.get_records(ProvActivity))


def check_against_store(
    store: AnalysisStore, runs: Mapping[str, ImportedRun], raw_uids: set[str]
) -> list[str]:
    """The uids of ``runs`` the store already has, unchanged (one search per catalog).

    Raises
    ------
    LineageConflictError
        A run the store has with another lineage hash, other parents or other code, or as
        another kind of run (naming the entity and both values).
    """
    stored = store.start_documents(sorted(set(runs) | raw_uids))
    known = []
    for uid, stored_start in stored.items():
        name = _entity(uid)
        start: Mapping[str, Any] = stored_start  # a run's start, with our provenance keys
        if uid in raw_uids:
            if is_analysis_run(start):
                raise LineageConflictError(name, "kind", "analysis run", "raw run")
            continue
        if not is_analysis_run(start):
            raise LineageConflictError(name, "kind", "raw run", "analysis run")
        imported = runs[uid].provenance
        theirs = Provenance.model_validate(start["provenance"])
        if start.get("lineage_hash") != imported.lineage_hash():
            raise LineageConflictError(
                name, "lineage_hash", start.get("lineage_hash"), imported.lineage_hash()
            )
        if sorted(theirs.parent_uids) != sorted(imported.parent_uids):
            raise LineageConflictError(
                name, "parents", sorted(theirs.parent_uids), sorted(imported.parent_uids)
            )
        if theirs.code != imported.code:
            raise LineageConflictError(
                name, "code", theirs.code.model_dump(), imported.code.model_dump()
            )
        known.append(uid)
    return known


def _raw_uids(document: ProvDocument) -> set[str]:
    from prov.model import ProvEntity

    raw = BAS_NAMESPACE + "RawRun"
    found = set()
    for entity in document.get_records(ProvEntity):
        types = {str(getattr(v, "uri", v)) for v in entity.get_attribute("prov:type")}
        if raw in types:
            attributes = {str(key.uri): value for key, value in entity.attributes}
            found.add(str(attributes[BAS_NAMESPACE + "uid"]))
    return found


def lineage_record(run: ImportedRun, source: str) -> list[tuple[str, RunStart | RunStop]]:
    """The documents of a lineage record: a start with the run's uid, time and provenance, and
    a stop saying the data are not here."""
    import event_model

    from ..provenance._policy import ProvenancePolicy
    from ..provenance._start_metadata import start_metadata

    policy = ProvenancePolicy.relaxed(_POLICY_REASON, verify_inputs=False)
    imported = {"source": source, "imported": datetime.now(UTC).isoformat()}
    md: dict[str, Any] = {IMPORTED_KEY: imported}
    if run.plan_name is not None:
        md["plan_name"] = run.plan_name
    bundle = event_model.compose_run(
        uid=run.uid, time=run.time, metadata=start_metadata(md, run.provenance, policy)
    )
    stop = bundle.compose_stop(
        exit_status="abort",
        reason=f"lineage record imported from {source}: the run's data are not in this store",
    )
    return [
        ("start", cast("RunStart", dict(bundle.start_doc))),
        ("stop", cast("RunStop", dict(stop))),
    ]


def import_prov(store: AnalysisStore, source: str | Path) -> ImportReport:
    """Read a PROV-JSON export of ours (``bas export --format prov-json``) into ``store``'s
    lineage; see the module's description.

    Parameters
    ----------
    store : AnalysisStore
        The receiving store (writable).
    source : str or Path
        The PROV-JSON file.

    Raises
    ------
    UnreadableFileError
        The file cannot be read as PROV-JSON.
    ProvenanceError
        The file contradicts itself.
    LineageConflictError
        The file contradicts what the store knows. Nothing is written in any of these cases.
    """
    document = read_prov_file(source)
    runs = described_runs(document)
    known = set(check_against_store(store, runs, _raw_uids(document)))
    report = ImportReport(str(source), known=sorted(known))
    name = Path(source).name
    order = sorted((r for r in runs.values() if r.uid not in known), key=lambda r: r.time or 0)
    for run in order:
        for document_name, doc in lineage_record(run, name):
            store.insert(document_name, doc)
        report.imported.append(run.uid)
    return report
