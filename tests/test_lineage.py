"""Lineage identity: what changes a run's lineage hash, what does not, and how it chains."""

from __future__ import annotations

import copy
import json
import math
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import PARENT_UID, compose, make_provenance

from bluesky_analysis_store import (
    Provenance,
    ProvenanceError,
    compose_analysis_run,
    describe_parent,
    lineage_hash,
)
from bluesky_analysis_store.provenance._provenance import canonical_json

OTHER_UID = "a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d"
THIRD_UID = "11111111-2222-4333-8444-555555555555"
HASH_A = "a" * 64
HASH_B = "b" * 64

#: Keys deliberately in neither sorted nor reverse-sorted order, nested two levels deep.
PARAMETERS: dict[str, Any] = {
    "threshold": 0.1,
    "bins": 10,
    "roi": {"stop": 2.5, "start": 1.5, "mode": {"order": 1, "kind": "linear", "edges": [3, 1]}},
    "label": "Fe K-edge α",
    "enabled": True,
    "background": None,
}
PARENTS: list[dict[str, Any]] = [
    {"uid": PARENT_UID, "lineage_hash": None},
    {"uid": OTHER_UID, "lineage_hash": HASH_A},
    {"uid": THIRD_UID, "lineage_hash": None},
]

#: A complete provenance record in its JSON form; the mutations below edit copies of it.
BASE: dict[str, Any] = {
    "schema_version": 1,
    "code": {
        "name": "xas_reduction",
        "version": "2.0",
        "module": "beamline.xas",
        "qualname": "reduce",
        "commit": "c" * 40,
        "dirty": False,
        "url": "https://example.org/xas",
    },
    "environment": {
        "python": "3.11.7",
        "platform": "Linux-6.1-x86_64",
        "host": "analysis-01",
        "user": "alice",
        "packages": {"numpy": "2.1.0", "event-model": "1.24.0"},
    },
    "parents": [dict(parent, catalog="tiled://raw") for parent in PARENTS],
    "inputs": [{"path": "/data/raw/scan_1.h5", "size": 1024, "sha256": "d" * 64, "mtime": 1.5}],
    "parameters": PARAMETERS,
    "created": "2024-05-01T12:00:00+00:00",
}

Mutation = Callable[[dict[str, Any]], None]


def _hash(document: dict[str, Any]) -> str:
    return Provenance.model_validate(document).lineage_hash()


def _mutated(mutate: Mutation) -> dict[str, Any]:
    document = copy.deepcopy(BASE)
    mutate(document)
    return document


def _set(*path_and_value: Any) -> Mutation:
    *path, value = path_and_value

    def mutate(document: dict[str, Any]) -> None:
        target = document
        for step in path[:-1]:
            target = target[step]
        target[path[-1]] = value

    return mutate


def _delete(*path: Any) -> Mutation:
    def mutate(document: dict[str, Any]) -> None:
        target = document
        for step in path[:-1]:
            target = target[step]
        del target[path[-1]]

    return mutate


def _reordered(value: Any, order: Callable[[list[str]], list[str]]) -> Any:
    """``value`` with every dict's keys (recursively) inserted in ``order(keys)``."""
    if isinstance(value, dict):
        return {key: _reordered(value[key], order) for key in order(list(value))}
    if isinstance(value, list):
        return [_reordered(item, order) for item in value]
    return value


def _reverse(keys: list[str]) -> list[str]:
    return keys[::-1]


def _rotate(keys: list[str]) -> list[str]:
    return keys[1:] + keys[:1]


def test_base_record_is_valid_and_hash_is_64_lowercase_hex():
    provenance = Provenance.model_validate(BASE)
    value = provenance.lineage_hash()
    assert re.fullmatch(r"[0-9a-f]{64}", value)
    assert lineage_hash(provenance) == value
    assert _hash(BASE) == value  # deterministic within a process


# --- stability across processes, hash seeds and insertion orders ------------------------------

SUBPROCESS_SCRIPT = """
import json, os, sys
from bluesky_analysis_store import CodeProvenance, ParentRun, Provenance

spec = json.loads(sys.argv[1])  # json.loads keeps the text's key order
provenance = Provenance(
    code=CodeProvenance(name=spec["name"], version=spec["version"]),
    parents=[ParentRun(**parent) for parent in spec["parents"]],
    parameters=spec["parameters"],
)
print(json.dumps({
    "hash": provenance.lineage_hash(),
    "seed": os.environ.get("PYTHONHASHSEED"),
    "keys": list(provenance.parameters),
    "nested": list(provenance.parameters["roi"]),
    "parents": provenance.parent_uids,
}))
"""


def test_hash_is_stable_across_processes_hash_seeds_and_insertion_orders(tmp_path):
    from bluesky_analysis_store import CodeProvenance, ParentRun

    in_process = Provenance(
        code=CodeProvenance(name="xas_reduction", version="2.0"),
        parents=[ParentRun(**parent) for parent in PARENTS],
        parameters=PARAMETERS,
    ).lineage_hash()
    assert in_process == _hash({**BASE, "inputs": []})  # the subprocesses record no inputs

    variants = {"1": _reverse, "4242": _rotate}
    processes = {}
    for seed, order in variants.items():
        spec = {
            "name": "xas_reduction",
            "version": "2.0",
            "parameters": _reordered(PARAMETERS, order),
            "parents": order(PARENTS),
        }
        processes[seed] = subprocess.Popen(
            [sys.executable, "-c", SUBPROCESS_SCRIPT, json.dumps(spec)],
            cwd=tmp_path,
            env={**os.environ, "PYTHONHASHSEED": seed},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    results = {}
    for seed, process in processes.items():
        stdout, stderr = process.communicate(timeout=60)
        assert process.returncode == 0, stderr
        results[seed] = json.loads(stdout.strip().splitlines()[-1])

    # The orders really differed, in each process and from this one.
    orders = [
        (list(PARAMETERS), list(PARAMETERS["roi"]), [p["uid"] for p in PARENTS]),
        *((r["keys"], r["nested"], r["parents"]) for r in results.values()),
    ]
    for i in range(3):
        assert len({json.dumps(order[i]) for order in orders}) == 3, orders
    assert {r["seed"] for r in results.values()} == set(variants)
    assert {r["hash"] for r in results.values()} == {in_process}


def test_parameter_and_parent_order_do_not_matter_in_process():
    reordered = copy.deepcopy(BASE)
    reordered["parameters"] = _reordered(BASE["parameters"], _reverse)
    reordered["parents"] = _reverse(BASE["parents"])
    assert list(reordered["parameters"]) != list(BASE["parameters"])
    assert _hash(reordered) == _hash(BASE)


# --- what does not change the hash ------------------------------------------------------------

INSENSITIVE: dict[str, Mutation] = {
    "environment.host": _set("environment", "host", "analysis-02"),
    "environment.user": _set("environment", "user", "bob"),
    "environment.python": _set("environment", "python", "3.13.1"),
    "environment.platform": _set("environment", "platform", "macOS-14-arm64"),
    "environment.packages": _set("environment", "packages", {"numpy": "1.26.4"}),
    "environment.none": _set("environment", None),
    "created": _set("created", "2031-01-01T00:00:00-08:00"),
    "inputs.path": _set("inputs", 0, "path", "/elsewhere/scan_1.h5"),
    "inputs.mtime": _set("inputs", 0, "mtime", 99.0),
    "code.commit": _set("code", "commit", "e" * 40),
    "code.commit.none": _set("code", "commit", None),
    "code.dirty": _set("code", "dirty", True),
    "code.module": _set("code", "module", "other.module"),
    "code.url": _set("code", "url", None),
    "code.qualname": _set("code", "qualname", "Reducer.__call__"),
    "parents.catalog": _set("parents", 1, "catalog", "file:///mirror"),
    "parents.order": lambda doc: doc["parents"].reverse(),
    "parameters.key_order": _set("parameters", _reordered(PARAMETERS, _rotate)),
}


@pytest.mark.parametrize("mutate", INSENSITIVE.values(), ids=INSENSITIVE.keys())
def test_where_and_when_do_not_change_the_hash(mutate):
    document = _mutated(mutate)
    assert document != BASE or mutate is INSENSITIVE["parameters.key_order"]
    assert _hash(document) == _hash(BASE)


# --- what changes the hash --------------------------------------------------------------------

SENSITIVE: dict[str, Mutation] = {
    "code.name": _set("code", "name", "xas_reduction_v2"),
    "code.version": _set("code", "version", "2.1"),
    "code.version.none": _set("code", "version", None),
    "parameters.value": _set("parameters", "threshold", 0.2),
    "parameters.string": _set("parameters", "label", "Fe K-edge"),
    "parameters.nested_value": _set("parameters", "roi", "mode", "order", 2),
    "parameters.nested_list_order": _set("parameters", "roi", "mode", "edges", [1, 3]),
    "parameters.int_10_vs_float_10.0_differ": _set("parameters", "bins", 10.0),
    "parameters.true_vs_1_differ": _set("parameters", "enabled", 1),
    "parameters.none_vs_missing_differ": _delete("parameters", "background"),
    "parameters.add": _set("parameters", "smoothing", 3),
    "parameters.remove": _delete("parameters", "bins"),
    "parameters.nested_add": _set("parameters", "roi", "width", 1.0),
    "parameters.nested_remove": _delete("parameters", "roi", "start"),
    "parameters.rename_key": lambda doc: doc["parameters"].update(
        bins2=doc["parameters"].pop("bins")
    ),
    "parents.add": lambda doc: doc["parents"].append(
        {"uid": "0" * 8 + "-0000-4000-8000-" + "0" * 12}
    ),
    "parents.remove": lambda doc: doc["parents"].pop(),
    "parents.remove_all": _set("parents", []),
    "parents.change_uid": _set("parents", 0, "uid", "0f3c5a8e-9b1d-4c2e-8a7f-1d2e3f4a5b6d"),
    "parents.lineage_hash_added": _set("parents", 0, "lineage_hash", HASH_B),
    "parents.lineage_hash_changed": _set("parents", 1, "lineage_hash", HASH_B),
    "parents.lineage_hash_removed": _set("parents", 1, "lineage_hash", None),
}


@pytest.mark.parametrize("mutate", SENSITIVE.values(), ids=SENSITIVE.keys())
def test_what_was_computed_changes_the_hash(mutate):
    assert _hash(_mutated(mutate)) != _hash(BASE)


def test_each_sensitive_mutation_gives_its_own_hash():
    hashes = [_hash(_mutated(mutate)) for mutate in SENSITIVE.values()]
    assert len(set(hashes)) == len(hashes)


def test_int_and_float_parameters_are_distinct_in_canonical_json():
    """Pydantic keeps 1 an int and 1.0 a float; canonical JSON writes "1" and "1.0"."""
    assert canonical_json({"x": 1}) == '{"x":1}'
    assert canonical_json({"x": 1.0}) == '{"x":1.0}'
    as_int = _mutated(_set("parameters", "bins", 1))
    as_float = _mutated(_set("parameters", "bins", 1.0))
    assert type(Provenance.model_validate(as_float).parameters["bins"]) is float
    assert _hash(as_int) != _hash(as_float)


def test_input_file_content_changes_the_hash():
    """Inputs count by content: an inputs-only analysis of other data is another lineage."""
    changed = _mutated(_set("inputs", 0, "sha256", "f" * 64))
    assert _hash(changed) != _hash(BASE)
    assert _hash(_mutated(_set("inputs", 0, "size", 2048))) != _hash(BASE)
    assert _hash(_mutated(_delete("inputs", 0))) != _hash(BASE)


def test_a_parent_listed_twice_is_the_same_set_of_parents():
    twice = {**BASE, "parents": [*BASE["parents"], BASE["parents"][0]]}
    assert _hash(twice) == _hash(BASE)


# --- chaining: an analysis of an analysis -----------------------------------------------------


def test_chained_runs_carry_the_parent_lineage_hash(tmp_path):
    first = compose([{"primary": {"x": 1.0}}], {}, provenance=make_provenance(parameters={"a": 1}))
    first_start = first.documents[0][1]
    assert first_start["parent_uids"] == [PARENT_UID]
    assert re.fullmatch(r"[0-9a-f]{64}", first_start["lineage_hash"])

    parent = describe_parent(first_start)
    assert parent.uid == first.uid
    assert parent.lineage_hash == first_start["lineage_hash"]

    second = compose(
        [{"primary": {"image": np.zeros((4, 4), "f4"), "x": 2.0}}],
        {},
        root=tmp_path,
        writers={"image": "BAS_HDF5"},
        provenance=make_provenance(parents=[first_start], parameters={"b": 2}),
    )
    second_start = second.documents[0][1]
    assert second_start["parent_uids"] == [first.uid]
    assert second_start["provenance"]["parents"][0]["uid"] == first.uid
    assert second_start["provenance"]["parents"][0]["lineage_hash"] == first_start["lineage_hash"]
    assert second_start["lineage_hash"] != first_start["lineage_hash"]

    for start in (first_start, second_start):
        recomputed = Provenance.model_validate(start["provenance"]).lineage_hash()
        assert recomputed == start["lineage_hash"]

    # The same uid without its lineage hash (a raw-run reference) is a different lineage.
    as_raw = make_provenance(parents=[first.uid], parameters={"b": 2})
    assert as_raw.lineage_hash() != second_start["lineage_hash"]


# --- NaN ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, {"a": [1.0, math.nan]}])
def test_canonical_json_refuses_non_finite_floats(value):
    with pytest.raises(ValueError, match="not JSON compliant"):
        canonical_json(value)


def _tree(root: Path) -> dict[str, bytes | None]:
    return {
        path.relative_to(root).as_posix(): path.read_bytes() if path.is_file() else None
        for path in sorted(root.rglob("*"))
    }


def _nan_document() -> dict[str, Any]:
    """Valid provenance in JSON form, with a NaN parameter."""
    document = make_provenance().model_dump(mode="json")
    document["parameters"] = {"threshold": math.nan, "bins": 10}
    return document


def test_provenance_with_nan_parameters_validates_but_cannot_be_hashed():
    provenance = Provenance.model_validate(_nan_document())
    assert math.isnan(provenance.parameters["threshold"])
    with pytest.raises(ValueError, match="not JSON compliant"):
        provenance.lineage_hash()


def test_nan_parameters_are_refused_before_anything_is_written(tmp_path):
    """Refused by enforcement, naming the parameter, before any file is written."""
    document = _nan_document()
    root = tmp_path / "root"
    root.mkdir()
    for given in (document, Provenance.model_validate(document)):
        with pytest.raises(ProvenanceError, match=r"parameters\['threshold'\] = nan is not finite"):
            compose_analysis_run(
                [{"primary": {"image": np.zeros((4, 4), "f4"), "x": 1.0}}],
                {},
                root=root,
                writers={"image": "BAS_HDF5"},
                provenance=given,
            )
        assert _tree(root) == {}


def test_nan_parameters_are_refused_with_a_provenance_error():
    with pytest.raises(ProvenanceError, match="not finite"):
        compose_analysis_run([{"primary": {"x": 1.0}}], {}, provenance=_nan_document())
