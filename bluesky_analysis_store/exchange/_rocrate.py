"""RO-Crate export of an analysis run: a Process Run Crate (the Workflow Run RO-Crate family's
profile for one tool run), built and read with the ``rocrate`` package.

* the ``CreateAction`` is the analysis execution (``startTime`` the provenance's time, ``agent``
  the user);
* its ``instrument`` the code, a ``SoftwareApplication`` with ``softwareVersion`` and the git
  commit as its ``identifier`` (a ``PropertyValue``);
* its ``object`` the parent runs (``Dataset`` entities with their lineage hash), the input files
  (``File`` with ``sha256`` and ``contentSize``, referenced by content, not copied: they are the
  source facility's) and the parameters (``PropertyValue``);
* its ``result`` the derived files, copied into the crate under ``files/`` with their
  ``sha256``: a crate is what travels, and a path at the source facility would resolve nowhere.

Entity identifiers are the PROV export's (``urn:bluesky-analysis-store:run/<uid>``...), so the
two exports name the same things alike.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from ..core._errors import AnalysisInputError, FileCollisionError
from ..core._names import BAS_NAMESPACE
from ._prov import code_agent_id, run_id
from ._record import ProvenanceRecord, RunRecord, gather

if TYPE_CHECKING:
    from rocrate.rocrate import ROCrate

    from ..store._store import AnalysisStore

#: The profiles the crate conforms to (Process Run Crate 0.5 is defined on RO-Crate 1.1).
PROCESS_RUN_CRATE = "https://w3id.org/ro/wfrun/process/0.5"
RO_CRATE_VERSION = "1.1"


def check_crate_directory(directory: str | Path) -> Path:
    """``directory`` if a crate can be written there (missing, or an empty directory).

    Raises
    ------
    FileCollisionError
        When it exists and is not an empty directory (nothing is overwritten).
    """
    path = Path(directory)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise FileCollisionError(
            f"{path} exists and is not an empty directory; give a new or empty directory for "
            "the crate (nothing was written)"
        )
    return path


def export_ro_crate(
    store: AnalysisStore, uid: str, directory: str | Path, *, recursive: bool = False
) -> Path:
    """Write the RO-Crate of analysis run ``uid`` into ``directory`` (new or empty) and return
    the path of its ``ro-crate-metadata.json``.

    Raises
    ------
    FileCollisionError
        When ``directory`` exists and is not empty.
    NotFoundError
        When the store has no such run.
    AnalysisInputError
        When ``uid`` is a raw run (no analysis execution to describe).
    """
    target = check_crate_directory(directory)
    record = gather(store, uid, recursive=recursive)
    build_crate(record).write(target)
    return target / "ro-crate-metadata.json"


def build_crate(record: ProvenanceRecord) -> ROCrate:
    """The crate of a gathered record (its derived files are copied when it is written)."""
    from rocrate.rocrate import ROCrate

    run = record.focus_run
    if run.provenance is None:
        raise AnalysisInputError(
            f"run {run.uid} is a {run.kind} run: an RO-Crate describes an analysis run's "
            "execution (export a raw run's provenance with --format prov-json)"
        )
    crate = ROCrate(version=RO_CRATE_VERSION)
    root = crate.root_dataset
    root["name"] = f"{run.label}: analysis run {run.uid}"
    root["description"] = (
        f"Provenance of analysis run {run.uid} exported by bluesky-analysis-store: what it "
        "read, the code that ran, the parameters, and the files it wrote."
    )
    root["conformsTo"] = [{"@id": PROCESS_RUN_CRATE}]
    crate.add(_context(crate, PROCESS_RUN_CRATE, "CreativeWork", name="Process Run Crate"))
    _run_dataset(crate, run)
    actions = [_action(crate, described, record) for described in record.described()]
    root["mentions"] = actions
    return crate


def _context(crate: ROCrate, identifier: str, kind: str, /, **properties: Any) -> Any:
    from rocrate.model.contextentity import ContextEntity

    return ContextEntity(crate, identifier, properties={"@type": kind, **properties})


def _run_dataset(crate: ROCrate, run: RunRecord) -> Any:
    """A run as a ``Dataset`` referenced by its identifier (its data stay in the store), listed
    in the root's ``hasPart`` as RO-Crate asks of every data entity."""
    identifier = f"{BAS_NAMESPACE}{run_id(run.uid)}"
    if (existing := crate.get(identifier)) is not None:
        return existing
    properties: dict[str, Any] = {"name": run.label, "identifier": run.uid}
    if run.lineage_hash:
        properties["description"] = f"lineage hash {run.lineage_hash}"
    return _part(crate, crate.add(_context(crate, identifier, "Dataset", **properties)))


def _part(crate: ROCrate, entity: Any) -> Any:
    crate.root_dataset.append_to("hasPart", entity)
    return entity


def _action(crate: ROCrate, run: RunRecord, record: ProvenanceRecord) -> Any:
    provenance = run.provenance
    assert provenance is not None  # described runs are analysis runs
    objects = []
    for parent in provenance.parents:
        parent_run = record.runs.get(parent.uid) or RunRecord(parent.uid, "missing")
        objects.append(_run_dataset(crate, parent_run))
    for item in run.input_files:
        objects.append(_input_file(crate, item.path, item.sha256, item.size, record))
    for name, value in sorted(provenance.parameters.items()):
        objects.append(
            crate.add(
                _context(
                    crate,
                    f"#parameter-{run.uid}-{quote(name, safe='')}",
                    "PropertyValue",
                    name=name,
                    value=json.dumps(value, sort_keys=True),
                )
            )
        )
    results = [
        crate.add_file(
            record.root / file.path,
            dest_path=f"files/{file.path}",
            properties={"sha256": file.sha256, "contentSize": file.size, "name": file.path},
        )
        for file in run.derived_files
        if (record.root / file.path).is_file()
    ]
    properties: dict[str, Any] = {
        "name": f"{run.label} (run {run.uid})",
        "startTime": provenance.created.isoformat(),
    }
    if provenance.environment is not None:
        properties["agent"] = {"@id": _person(crate, provenance.environment.user).id}
    return crate.add_action(
        _instrument(crate, run),
        identifier=f"{BAS_NAMESPACE}execution/{run.uid}",
        object=objects,
        result=results,
        properties={"@type": "CreateAction", **properties},
    )


def _input_file(crate: ROCrate, path: str, sha256: str, size: int, record: ProvenanceRecord) -> Any:
    """A file the analysis read, referenced by content (a data entity of the crate without a
    copy, so listed in the root's ``hasPart`` as RO-Crate asks)."""
    from ._record import relative_to_root

    identifier = f"{BAS_NAMESPACE}file/{sha256}"
    entity = crate.get(identifier)
    if entity is None:
        name = relative_to_root(path, record.root)
        entity = _part(
            crate,
            crate.add(
                _context(crate, identifier, "File", name=name, sha256=sha256, contentSize=size)
            ),
        )
    return entity


def _instrument(crate: ROCrate, run: RunRecord) -> Any:
    from rocrate.model.softwareapplication import SoftwareApplication

    code = run.code
    assert code is not None
    identifier = f"{BAS_NAMESPACE}{code_agent_id(run)}"
    if (existing := crate.get(identifier)) is not None:
        return existing
    properties: dict[str, Any] = {"name": code.name}
    if code.version:
        properties["softwareVersion"] = code.version
    if code.url:
        properties["url"] = code.url
    if code.commit:
        commit = crate.add(
            _context(
                crate,
                f"#commit-{code.commit}",
                "PropertyValue",
                propertyID="git commit",
                value=code.commit,
            )
        )
        properties["identifier"] = {"@id": commit.id}
    return crate.add(SoftwareApplication(crate, identifier, properties=properties))


def _person(crate: ROCrate, user: str) -> Any:
    from rocrate.model.person import Person

    identifier = f"{BAS_NAMESPACE}user/{quote(user, safe='')}"
    if (existing := crate.get(identifier)) is not None:
        return existing
    return crate.add(Person(crate, identifier, properties={"name": user}))
