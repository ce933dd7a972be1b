"""Provenance exports (PROV-JSON, RO-Crate, SciCat) and import-prov on one chain of analyses:
raw → two analyses → a merge, saved once for the module in a real in-process tiled catalog."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import raw_run, reduce_spectrum

from bluesky_analysis_store import AnalysisStore, capture_provenance


@dataclass
class Chain:
    store: AnalysisStore
    raw: Any
    raw_uid: str
    first: str
    second: str
    merge: str
    input_file: Path


def _save(store: AnalysisStore, parents: list[Any], name: str, **kwargs: Any) -> str:
    inputs = kwargs.pop("inputs", [])
    data = [{"primary": {"image": np.full((3, 2), i, "f4"), "x": float(i)}} for i in range(3)]
    provenance = capture_provenance(
        reduce_spectrum, parents=parents, inputs=inputs, name=name, parameters=kwargs
    )
    return store.save(data, {}, writers={"image": "BAS_HDF5"}, provenance=provenance)


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chain]:
    """An embedded store (its app's rules: provenance, lineage links) with a raw catalog."""
    with AnalysisStore.open(tmp_path_factory.mktemp("source"), raw="raw") as store:
        raw_uid = raw_run(store.raw, proposal_id="P-1234")
        calibration = store.root / "calibration.txt"
        calibration.write_text("gain 1.5\n")
        first = _save(store, [store.raw[raw_uid]], "normalize", inputs=[calibration], bins=10)
        second = _save(store, [store.raw[raw_uid]], "background", window=3)
        merge = _save(store, [store[first], store[second]], "merge", weights=[0.5, 0.5])
        yield Chain(store, store.raw, raw_uid, first, second, merge, calibration)


# --- PROV-JSON --------------------------------------------------------------------------------


def _read_back(document: Any) -> Any:
    from prov.model import ProvDocument

    return ProvDocument.deserialize(content=document.serialize(format="json"), format="json")


def _relations(document: Any, kind: type) -> set[tuple[str, ...]]:
    return {
        tuple(str(value) for _, value in record.formal_attributes if value is not None)
        for record in document.get_records(kind)
    }


def test_prov_json_of_one_run_reads_back_with_its_relations(chain: Chain) -> None:
    from prov.model import ProvAssociation, ProvDerivation, ProvGeneration, ProvUsage

    from bluesky_analysis_store import export_prov

    document = _read_back(export_prov(chain.store, chain.merge))
    run = f"bas:run/{chain.merge}"
    execution = f"bas:execution/{chain.merge}"
    derived = {(child, parent) for child, parent, *_ in _relations(document, ProvDerivation)}
    assert derived == {(run, f"bas:run/{chain.first}"), (run, f"bas:run/{chain.second}")}
    used = _relations(document, ProvUsage)
    assert {(execution, f"bas:run/{p}") for p in (chain.first, chain.second)} <= used
    generated = {entity for entity, activity, *_ in _relations(document, ProvGeneration)}
    assert run in generated
    assert any(e.startswith("bas:file/") for e in generated)  # the derived HDF5 file
    agents = {agent for _, agent, *_ in _relations(document, ProvAssociation)}
    assert any(a.startswith("bas:code/merge/1.0") for a in agents)
    assert any(a.startswith("bas:user/") for a in agents)
    # not recursive: the parents are described, their own executions are not
    assert not any(f"execution/{chain.first}" in str(a.identifier) for a in document.records)
    attributes = {str(k): v for k, v in document.get_record(f"bas:run/{chain.merge}")[0].attributes}
    start = chain.store[chain.merge].metadata["start"]
    assert attributes["bas:lineage_hash"] == start["lineage_hash"]
    assert attributes["bas:analysis_name"] == "merge"


def test_prov_json_recursive_describes_the_whole_ancestry(chain: Chain) -> None:
    from prov.model import ProvDerivation, ProvUsage

    from bluesky_analysis_store import export_prov

    document = _read_back(export_prov(chain.store, chain.merge, recursive=True))
    run = {uid: f"bas:run/{uid}" for uid in (chain.raw_uid, chain.first, chain.second, chain.merge)}
    derived = {
        (child, parent)
        for child, parent, *_ in _relations(document, ProvDerivation)
        if parent.startswith("bas:run/")
    }
    assert derived == {
        (run[chain.merge], run[chain.first]),
        (run[chain.merge], run[chain.second]),
        (run[chain.first], run[chain.raw_uid]),
        (run[chain.second], run[chain.raw_uid]),
    }
    # the input file of the first analysis, relative to the store's root, with its sha256
    import hashlib

    sha = hashlib.sha256(chain.input_file.read_bytes()).hexdigest()
    assert (f"bas:execution/{chain.first}", f"bas:file/{sha}") in _relations(document, ProvUsage)
    (file,) = document.get_record(f"bas:file/{sha}")
    assert {str(k): v for k, v in file.attributes}["bas:path"] == "calibration.txt"
    (raw,) = document.get_record(run[chain.raw_uid])
    assert {str(k): v for k, v in raw.attributes}["bas:plan_name"] == "count"


def test_tileds_graph_of_links_holds_the_exported_derivations(chain: Chain) -> None:
    """The store writes each run's ``prov:wasDerivedFrom`` links into tiled's graph when the
    run is created; read back through tiled's GraphQL, they are the export's derivations."""
    from bluesky_analysis_store.exchange._prov import derivations, graph_links, prov_document
    from bluesky_analysis_store.exchange._record import gather
    from bluesky_analysis_store.store._lineage_links import stored_links

    record = gather(chain.store, chain.merge, recursive=True)
    links = graph_links(record)
    assert {p for _, p, _ in links} == {"http://www.w3.org/ns/prov#wasDerivedFrom"}
    assert len(links) == 4
    assert derivations(_read_back(prov_document(record))) == links
    assert stored_links(chain.store.runs) == links


def test_tileds_graph_of_links_on_postgresql(postgres_catalog: Any) -> None:
    """The same links on a PostgreSQL catalog (the store's ``analysis`` container)."""
    import uuid

    from bluesky_analysis_store.store._catalog import runs_container
    from bluesky_analysis_store.store._lineage_links import WAS_DERIVED_FROM, run_iri, stored_links

    store = AnalysisStore(runs_container(postgres_catalog.client), postgres_catalog.new_root())
    parent = str(uuid.uuid4())  # the catalog is the session's: runs of other tests are there
    first = _save(store, [parent], "normalize", bins=1)
    second = _save(store, [store[first]], "fit", order=1)
    expected = {
        (run_iri(first), WAS_DERIVED_FROM, run_iri(parent)),
        (run_iri(second), WAS_DERIVED_FROM, run_iri(first)),
    }
    mine = {link for link in stored_links(store.runs) if link[0] in {e[0] for e in expected}}
    assert mine == expected


# --- RO-Crate ---------------------------------------------------------------------------------


def test_ro_crate_reads_back_as_a_process_run_crate(chain: Chain, tmp_path: Path) -> None:
    import hashlib

    from rocrate.rocrate import ROCrate

    from bluesky_analysis_store.exchange._rocrate import PROCESS_RUN_CRATE, export_ro_crate

    export_ro_crate(chain.store, chain.first, tmp_path / "crate")
    crate = ROCrate(tmp_path / "crate")
    assert [profile.id for profile in crate.root_dataset["conformsTo"]] == [PROCESS_RUN_CRATE]
    (action,) = crate.get_by_type("CreateAction")
    instrument = action["instrument"]
    assert instrument.type == "SoftwareApplication"
    assert instrument["name"] == "normalize"
    assert instrument["softwareVersion"] == "1.0"
    # rocrate reads a Dataset's id back with a trailing slash
    objects = {entity.id.rstrip("/"): entity for entity in action["object"]}
    assert f"urn:bluesky-analysis-store:run/{chain.raw_uid}" in objects
    sha = hashlib.sha256(chain.input_file.read_bytes()).hexdigest()
    assert objects[f"urn:bluesky-analysis-store:file/{sha}"]["sha256"] == sha
    parameters = {e["name"]: e["value"] for e in objects.values() if e.type == "PropertyValue"}
    assert parameters == {"bins": "10"}
    results = action["result"]
    assert results, "the derived files are the action's result"
    for result in results:
        copied = tmp_path / "crate" / result.id
        assert hashlib.sha256(copied.read_bytes()).hexdigest() == result["sha256"]


def test_ro_crate_refuses_a_directory_that_is_not_empty(chain: Chain, tmp_path: Path) -> None:
    from bluesky_analysis_store import FileCollisionError
    from bluesky_analysis_store.exchange._rocrate import export_ro_crate

    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(FileCollisionError, match="not an empty directory"):
        export_ro_crate(chain.store, chain.first, tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


# --- SciCat -----------------------------------------------------------------------------------


def test_scicat_derived_dataset_of_the_merge(chain: Chain) -> None:
    from bluesky_analysis_store.exchange._scicat import export_scicat

    body = export_scicat(
        chain.store,
        chain.merge,
        owner_group="p1234",
        contact_email="pi@example.org",
        pid_template="{proposal_id}/{uid}",
    ).model_dump(mode="json")
    dataset, datablock = body["dataset"], body["origDatablock"]
    assert dataset["type"] == "derived"
    assert dataset["inputDatasets"] == [f"P-1234/{chain.raw_uid}"]  # through both analyses
    assert dataset["usedSoftware"][0] == "merge 1.0"
    assert dataset["jobParameters"] == {"weights": [0.5, 0.5]}
    assert dataset["scientificMetadata"]["parent_uids"] == [chain.first, chain.second]
    assert dataset["numberOfFiles"] == len(datablock["dataFileList"]) >= 1
    assert dataset["size"] == datablock["size"] == sum(f["size"] for f in datablock["dataFileList"])
    import hashlib

    for entry in datablock["dataFileList"]:
        content = (Path(dataset["sourceFolder"]) / entry["path"]).read_bytes()
        assert hashlib.sha256(content).hexdigest() == entry["chk"]


def test_scicat_body_refuses_a_misspelt_field_and_a_template_field_a_raw_run_lacks(
    chain: Chain,
) -> None:
    from pydantic import ValidationError

    from bluesky_analysis_store import AnalysisInputError
    from bluesky_analysis_store.exchange._scicat import ScicatExport, export_scicat

    body = export_scicat(
        chain.store, chain.first, owner_group="g", contact_email="a@b.c"
    ).model_dump(mode="json")
    assert body["dataset"]["inputDatasets"] == [chain.raw_uid]  # the default template: the uid
    body["dataset"]["inputDataset"] = body["dataset"].pop("inputDatasets")
    with pytest.raises(ValidationError, match="inputDataset"):
        ScicatExport.model_validate(body)
    with pytest.raises(AnalysisInputError, match="beamline"):
        export_scicat(
            chain.store,
            chain.first,
            owner_group="g",
            contact_email="a@b.c",
            pid_template="{beamline}/{uid}",
        )


# --- import-prov ------------------------------------------------------------------------------


def _graph(store: AnalysisStore, uid: str) -> tuple[set[Any], set[Any]]:
    graph = store.lineage(uid)
    return {(n.uid, n.kind, n.label) for n in graph.nodes.values()}, set(graph.edges)


@pytest.fixture(scope="module")
def exported(chain: Chain, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from bluesky_analysis_store import export_prov

    path = tmp_path_factory.mktemp("prov") / "merge.json"
    path.write_text(export_prov(chain.store, chain.merge, recursive=True).serialize(format="json"))
    return path


def test_import_prov_round_trip_gives_the_same_lineage(
    chain: Chain, exported: Path, tmp_path: Path
) -> None:
    # the receiving facility has the raw runs (copied), not the analyses
    with AnalysisStore.open(tmp_path / "target", raw=chain.raw) as target:
        _round_trip(chain, exported, target)


def _round_trip(chain: Chain, exported: Path, target: AnalysisStore) -> None:
    from bluesky_analysis_store.exchange._import import import_prov
    from bluesky_analysis_store.store._lineage_links import stored_links

    report = import_prov(target, exported)
    assert sorted(report.imported) == sorted([chain.first, chain.second, chain.merge])
    assert _graph(target, chain.merge) == _graph(chain.store, chain.merge)
    assert target.lineage(chain.merge).ancestors() == chain.store.lineage(chain.merge).ancestors()
    assert stored_links(target.runs) == stored_links(chain.store.runs)  # tiled's graph too
    # records of lineage, not results: the queries for data do not return them
    assert target.derived_from(chain.raw_uid) == []
    from bluesky_analysis_store import check_store

    assert check_store(target, grace=0).clean  # fsck --repair would not delete them
    again = import_prov(target, exported)  # idempotent
    assert again.imported == []
    assert sorted(again.known) == sorted(report.imported)


def test_import_prov_refuses_a_contradiction_and_writes_nothing(
    chain: Chain, exported: Path, tiled_catalog: Any
) -> None:
    from bluesky_analysis_store import LineageConflictError
    from bluesky_analysis_store.exchange._import import import_prov

    target = AnalysisStore(tiled_catalog.new_runs_container(), tiled_catalog.new_root())
    data = [{"primary": {"x": 1.0}}]
    provenance = capture_provenance(
        reduce_spectrum, parents=[chain.raw_uid], name="normalize", parameters={"bins": 99}
    )
    target.save(data, {}, provenance=provenance, uid=chain.first)  # the same uid, other bins
    with pytest.raises(LineageConflictError, match=f"bas:run/{chain.first}: the store has lin"):
        import_prov(target, exported)
    assert list(target) == [chain.first]


def test_import_prov_refuses_a_file_that_contradicts_itself_or_is_not_prov(
    exported: Path, tmp_path: Path, tiled_catalog: Any
) -> None:
    from bluesky_analysis_store import ProvenanceError
    from bluesky_analysis_store.core._errors import UnreadableFileError
    from bluesky_analysis_store.exchange._import import import_prov

    target = AnalysisStore(tiled_catalog.new_runs_container(), tiled_catalog.new_root())
    document = json.loads(exported.read_text())
    entity = next(e for e in document["entity"].values() if "bas:lineage_hash" in e)
    entity["bas:lineage_hash"] = "0" * 64
    tampered = tmp_path / "tampered.json"
    tampered.write_text(json.dumps(document))
    with pytest.raises(ProvenanceError, match="bas:lineage_hash '0000"):
        import_prov(target, tampered)
    (tmp_path / "not.json").write_text("{not json")
    with pytest.raises(UnreadableFileError, match=r"not\.json"):
        import_prov(target, tmp_path / "not.json")
    assert list(target) == []


# --- the commands -----------------------------------------------------------------------------


def test_bas_export_and_import_prov_between_two_embedded_stores(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``bas export`` / ``bas import-prov`` as typed (in this process), and their refusals:
    each leaves nothing behind."""
    from bluesky_analysis_store.cli import main

    source, target = tmp_path / "source", tmp_path / "target"
    with AnalysisStore.open(source) as store:
        parent = _save(store, ["0f3c5a8e-9b1d-4c2e-8a7f-1d2e3f4a5b6c"], "normalize", bins=4)
        uid = _save(store, [store[parent]], "fit", order=2)
    exported = tmp_path / "fit.json"
    argv = ["export", uid[:8], "--format", "prov-json", "--recursive", "--store", str(source)]
    assert main([*argv, "-o", str(exported)]) == 0
    assert main([*argv, "-o", str(exported)]) == 1  # never overwritten
    assert "exists; exports never overwrite" in capsys.readouterr().err
    assert main(["import-prov", str(exported), "--store", str(target)]) == 0
    assert f"lineage record {uid}" in capsys.readouterr().out
    assert main(["lineage", uid, "--store", str(target)]) == 0
    shown = capsys.readouterr().out
    assert f"{uid[:8]}  fit 1.0  [analysis]" in shown
    assert f"  └── {parent[:8]}  normalize 1.0  [analysis]" in shown

    # the destination after the format, as the issue writes it: --format ro-crate DIR
    written = tmp_path / "written"
    assert main(["export", uid, "--format", "ro-crate", str(written), "--store", str(source)]) == 0
    assert (written / "ro-crate-metadata.json").is_file()
    shutil.rmtree(written)

    crate = tmp_path / "crate"
    (crate / "mine").mkdir(parents=True)
    refusals = {
        ("export", uid, "--format", "prov-xml"): "unknown export format 'prov-xml'",
        ("export", uid, str(crate), "--format", "ro-crate"): "not an empty directory",
        ("export", uid, "--format", "scicat"): "needs --owner-group and --contact-email",
        ("import-prov", str(tmp_path / "none.json")): "cannot be read as PROV-JSON",
        ("export", "ffffffff", "--format", "prov-json"): "no run 'ffffffff'",
        ("export", uid, "a.json", "--format", "prov-json", "b.json"): "give the destination once",
    }
    for command, message in refusals.items():
        assert main([*command, "--store", str(source)]) == 1, command
        assert message in capsys.readouterr().err, command
    assert sorted(p.name for p in tmp_path.iterdir()) == ["crate", "fit.json", "source", "target"]
    assert [p.name for p in crate.iterdir()] == ["mine"]
