"""W3C PROV export of a run's provenance, built with the ``prov`` package (PROV-JSON, PROV-N,
PROV-O all come from the one :class:`prov.model.ProvDocument`).

Identifiers are in our namespace :data:`BAS_NAMESPACE` (prefix ``bas``): ``bas:run/<uid>`` for a
run (an entity), ``bas:execution/<uid>`` for the analysis execution that produced it (an
activity), ``bas:file/<sha256>`` for a file (content-addressed, as the lineage hash sees
inputs), ``bas:code/<name>/<version>[/<commit>]`` and ``bas:user/<name>`` for the agents. The
relations are PROV's own terms (``prov:`` = ``http://www.w3.org/ns/prov#``), the same IRIs a link
of tiled's graph would carry (:func:`graph_links`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from ..core._names import BAS_NAMESPACE
from ..provenance._provenance import canonical_json
from ..store._lineage_links import RUN_IRI_PREFIX, WAS_DERIVED_FROM, run_iri
from ._record import FileRecord, ProvenanceRecord, RunRecord, gather

if TYPE_CHECKING:
    from prov.model import ProvAgent, ProvDocument, ProvEntity

    from ..store._store import AnalysisStore

BAS_PREFIX = "bas"
#: The PROV relations an export writes; a link of tiled's graph uses the same predicate IRIs.
RELATIONS = ("wasDerivedFrom", "used", "wasGeneratedBy", "wasAssociatedWith")


def run_id(uid: str) -> str:
    """The local name of a run's entity (``bas:run/<uid>``)."""
    return f"run/{uid}"


def export_prov(store: AnalysisStore, uid: str, *, recursive: bool = False) -> ProvDocument:
    """The W3C PROV document of run ``uid``'s provenance.

    Parameters
    ----------
    store : AnalysisStore
        The store holding the run.
    uid : str
        The run (full or partial uid).
    recursive : bool
        Describe the whole ancestry (every analysis run's execution, code and files), not only
        the run and its direct parents.

    Returns
    -------
    prov.model.ProvDocument
        ``.serialize(format="json")`` gives PROV-JSON; ``format="provn"`` PROV-N.

    Raises
    ------
    NotFoundError
        When the store (and its raw catalog) has no such run.
    """
    return prov_document(gather(store, uid, recursive=recursive))


def prov_document(record: ProvenanceRecord) -> ProvDocument:
    """The PROV document of a gathered :class:`ProvenanceRecord`."""
    from prov.model import ProvDocument

    document = ProvDocument()
    document.add_namespace(BAS_PREFIX, BAS_NAMESPACE)
    for run in record.runs.values():
        _run_entity(document, run)
    for run in record.described():
        _execution(document, run, record)
    return document


def _bas(document: ProvDocument, local: str) -> Any:
    return document.valid_qualified_name(f"{BAS_PREFIX}:{local}")


def _when(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, UTC)


def _run_entity(document: ProvDocument, run: RunRecord) -> ProvEntity:
    from prov.constants import PROV_TYPE

    kinds = {"analysis": "AnalysisRun", "raw": "RawRun", "missing": "Run"}
    attributes: dict[Any, Any] = {
        PROV_TYPE: _bas(document, kinds[run.kind]),
        _bas(document, "uid"): run.uid,
    }
    optional = {
        "plan_name": run.plan_name,
        "lineage_hash": run.lineage_hash,
        "time": None if run.time is None else _when(run.time),
    }
    if run.provenance is not None:
        optional["analysis_name"] = run.provenance.code.name
        optional["analysis_version"] = run.provenance.code.version
        # the whole record, so that an import rebuilds exactly the run's lineage (its hash)
        optional["provenance"] = canonical_json(run.provenance.model_dump(mode="json"))
    for name, value in optional.items():
        if value is not None:
            attributes[_bas(document, name)] = value
    return document.entity(_bas(document, run_id(run.uid)), attributes)


def _file_entity(document: ProvDocument, file: FileRecord) -> ProvEntity:
    from prov.constants import PROV_TYPE

    return document.entity(
        _bas(document, f"file/{file.sha256}"),
        {
            PROV_TYPE: _bas(document, "File"),
            _bas(document, "path"): file.path,
            _bas(document, "sha256"): file.sha256,
            _bas(document, "size"): file.size,
        },
    )


def _execution(document: ProvDocument, run: RunRecord, record: ProvenanceRecord) -> None:
    """The activity that made ``run``, what it used, generated and was associated with."""
    assert run.provenance is not None  # an analysis run
    provenance = run.provenance
    entity = _bas(document, run_id(run.uid))
    attributes: dict[Any, Any] = {
        _bas(document, "parameters"): canonical_json(provenance.parameters)
    }
    if provenance.environment is not None:
        attributes[_bas(document, "host")] = provenance.environment.host
        attributes[_bas(document, "python")] = provenance.environment.python
    activity = document.activity(
        _bas(document, f"execution/{run.uid}"), provenance.created, None, attributes
    )
    document.wasGeneratedBy(entity, activity)
    for parent in provenance.parents:
        parent_entity = _bas(document, run_id(parent.uid))
        if parent.uid not in record.runs:  # named by the provenance, not gathered (a loop?)
            document.entity(parent_entity)
        document.used(activity, parent_entity)
        document.wasDerivedFrom(entity, parent_entity, activity)
    for item in run.input_files:
        file = FileRecord(_relative(item.path, record), item.sha256, item.size, "input")
        used = _file_entity(document, file)
        document.used(activity, used)
        document.wasDerivedFrom(entity, used, activity)
    for file in run.derived_files:
        document.wasGeneratedBy(_file_entity(document, file), activity)
    document.wasAssociatedWith(activity, _code_agent(document, run))
    if provenance.environment is not None:
        document.wasAssociatedWith(activity, _user_agent(document, provenance.environment.user))


def _relative(path: str, record: ProvenanceRecord) -> str:
    from ._record import relative_to_root

    return relative_to_root(path, record.root)


def code_agent_id(run: RunRecord) -> str:
    """``code/<name>/<version>[/<commit>]`` (each part percent-encoded)."""
    code = run.code
    assert code is not None
    parts = [code.name, code.version or "unversioned"] + ([code.commit] if code.commit else [])
    return "code/" + "/".join(quote(part, safe="") for part in parts)


def _code_agent(document: ProvDocument, run: RunRecord) -> ProvAgent:
    from prov.constants import PROV

    code = run.code
    assert code is not None
    attributes: dict[Any, Any] = {PROV["type"]: PROV["SoftwareAgent"]}
    for name, value in code.model_dump().items():
        if value is not None:
            attributes[_bas(document, name)] = value
    return document.agent(_bas(document, code_agent_id(run)), attributes)


def _user_agent(document: ProvDocument, user: str) -> ProvAgent:
    from prov.constants import PROV

    return document.agent(
        _bas(document, f"user/{quote(user, safe='')}"),
        {PROV["type"]: PROV["Person"], _bas(document, "name"): user},
    )


def graph_links(record: ProvenanceRecord) -> set[tuple[str, str, str]]:
    """The lineage as ``(subject IRI, predicate IRI, object IRI)`` triples, as tiled's graph of
    links would hold them (predicate ``prov:wasDerivedFrom`` expanded with the ``prov`` prefix
    registered as :data:`PROV_NAMESPACE`): the same IRIs as the export's derivations."""
    return {(run_iri(child), WAS_DERIVED_FROM, run_iri(parent)) for parent, child in record.edges()}


def derivations(document: ProvDocument) -> set[tuple[str, str, str]]:
    """The run-to-run ``wasDerivedFrom`` relations of a PROV document as IRI triples (what
    :func:`graph_links` gives for the record it was made from)."""
    from prov.constants import PROV, PROV_ATTR_GENERATED_ENTITY, PROV_ATTR_USED_ENTITY
    from prov.model import ProvDerivation

    predicate = str(PROV["wasDerivedFrom"].uri)
    found = set()
    for relation in document.get_records(ProvDerivation):
        arguments = dict(relation.formal_attributes)
        child, parent = arguments[PROV_ATTR_GENERATED_ENTITY], arguments[PROV_ATTR_USED_ENTITY]
        if str(child.uri).startswith(RUN_IRI_PREFIX) and str(parent.uri).startswith(RUN_IRI_PREFIX):
            found.add((str(child.uri), predicate, str(parent.uri)))
    return found
