"""Provenance on every path (issue 11): the analysis container takes only BlueskyRuns with
valid provenance, however a node is created or changed, on ``bas serve`` and on the embedded
store's in-process app alike; a raw catalog in the same tree and the nodes inside a run are not
concerned.

Each attempt is a plain HTTP request with the write key, as a client that bypasses this
package would send it.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from helpers import compose, figure, make_provenance
from served import Server
from targets import Target, embedded_target, served_target


@pytest.fixture(scope="module")
def served(bas_server: Server) -> Iterator[Target]:
    with served_target(bas_server) as target:
        yield target


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    with embedded_target(tmp_path_factory.mktemp("embedded") / "store") as target:
        yield target


def _forged(case: str) -> tuple[dict[str, Any], str]:
    """Metadata of a run that claims parents, a lineage and success, and its lineage hash."""
    start = dict(compose([{"p": {"x": 1.0}}], {}, provenance=_provenance(case)).documents[0][1])
    stop = {"uid": str(uuid.uuid4()), "run_start": start["uid"], "time": start["time"] + 1}
    stop |= {"exit_status": "success", "reason": "", "num_events": {"p": 1}}
    return {"start": start, "stop": stop}, start["lineage_hash"]


def _provenance(case: str) -> Any:
    return make_provenance(parameters={"provenance-rule": case})


def _save(target: Target, case: str) -> str:
    data = [{"p": {"image": np.arange(6.0).reshape(2, 3), "x": 1.0}}]
    return target.store.save(data, {}, provenance=_provenance(case), writers={"image": "BAS_HDF5"})


def _node(key: str, metadata: Any, specs: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {
        "id": key,
        "structure_family": "container",
        "metadata": metadata,
        "specs": specs,
        **extra,
    }


RUN = {"name": "BlueskyRun", "version": "3.0"}


def _bypass_attempts(target: Target) -> tuple[int, int]:
    """Every way around the rule we know of; returns (attempts, refused with 400)."""
    case = f"{target.name}-{secrets.token_hex(4)}"
    metadata, lineage = _forged(case)
    forged = metadata["start"]["uid"]
    no_provenance = {"start": {"uid": forged, "time": 1.0}}
    array = {
        "structure_family": "array",
        "mimetype": "application/x-zarr",
        "management": "writable",
        "parameters": {},
        "assets": [],
        "structure": {
            "data_type": {"endianness": "little", "kind": "f", "itemsize": 8, "dt_units": None},
            "chunks": [[2]],
            "shape": [2],
            "dims": None,
            "resizable": False,
        },
    }
    creations = [
        ("metadata/analysis", _node(forged, metadata, [])),  # no spec at all
        ("metadata/analysis", _node(forged, metadata, [{"name": "Other", "version": None}])),
        ("metadata/analysis", _node(forged, no_provenance, [RUN])),
        ("metadata/analysis", _node(forged, no_provenance, [{"name": "BlueskyRun"}])),
        ("metadata/analysis", _node(forged, no_provenance, [{**RUN, "version": "2.0"}])),
        ("metadata/analysis", _node(forged, {**metadata, "start": {}}, [RUN])),
        (
            "metadata/analysis",
            _node(forged, metadata, [RUN], structure_family="array", data_sources=[array]),
        ),
        ("register/analysis", _node(forged, metadata, [])),
        ("register/analysis", _node(forged, no_provenance, [RUN, {"name": "Other"}])),
    ]
    forged_hash = dict(metadata, start={**metadata["start"], "lineage_hash": "0" * 64})
    creations.append(("metadata/analysis", _node(forged, forged_hash, [RUN])))
    attempts = refused = 0
    for route, body in creations:
        attempts += 1
        response = target.post(route, body)
        assert response.status_code == 400, (route, body["specs"], response.text)
        assert "BlueskyRun" in response.json()["detail"]
        refused += 1
    assert forged not in target.store

    # replacing a stored run's metadata or specs (PUT, merge patch, JSON patch)
    uid = _save(target, f"{case}-replace")
    url = target.api + f"metadata/analysis/{uid}"
    merge = "application/merge-patch+json"
    replacements = [
        ("PUT", {"metadata": metadata, "specs": []}),
        ("PUT", {"metadata": no_provenance, "specs": None}),
        ("PATCH", {"content-type": merge, "specs": []}),
        ("PATCH", {"content-type": merge, "specs": [{"name": "Other", "version": None}]}),
        ("PATCH", {"content-type": merge, "metadata": {"start": None}, "specs": None}),
        (
            "PATCH",
            {
                "content-type": merge,
                "metadata": {"start": {"lineage_hash": "0" * 64}},
                "specs": None,
            },
        ),
        (
            "PATCH",
            {
                "content-type": "application/json-patch+json",
                "specs": [{"op": "remove", "path": "/0"}],
            },
        ),
        (
            "PATCH",
            {
                "content-type": "application/json-patch+json",
                "metadata": [{"op": "remove", "path": "/start/provenance"}],
                "specs": None,
            },
        ),
    ]
    for method, body in replacements:
        attempts += 1
        response = target.write.request(method, url, json=body)
        assert response.status_code == 400, (method, body, response.text)
        refused += 1
    assert target.store[uid].metadata["start"]["lineage_hash"] != "0" * 64
    assert "provenance" in target.store[uid].metadata["start"]
    # a change that keeps the provenance is still allowed
    response = target.write.patch(
        url, json={"content-type": merge, "metadata": {"note": "ok"}, "specs": None}
    )
    assert response.status_code == 200, response.text

    # delete a run, then recreate it without the spec or without provenance
    from bluesky_analysis_store.store._fsck import delete_run

    victim = _save(target, f"{case}-recreate")
    saved_metadata = dict(target.store[victim].metadata)
    delete_run(target.store.runs[victim])
    assert victim not in target.store
    for specs, recreated in [
        ([], saved_metadata),
        ([{"name": "Other"}], saved_metadata),
        ([RUN], {"start": {"uid": victim}}),
    ]:
        attempts += 1
        response = target.post("metadata/analysis", _node(victim, recreated, specs))
        assert response.status_code == 400, (specs, response.text)
        refused += 1
    assert victim not in target.store

    # the forged lineage is nowhere, and a genuine save of it works
    assert target.store.with_lineage(lineage, include_incomplete=True) == []
    genuine = target.store.save([{"p": {"x": 1.0}}], {}, provenance=_provenance(case))
    assert target.store.with_lineage(lineage) == [genuine]
    return attempts, refused


def _allowed_elsewhere(target: Target) -> None:
    """The rule is the analysis container's: a raw catalog's BlueskyRuns without provenance and
    the nodes inside a run are accepted."""
    from tiled.client import from_context

    from bluesky_analysis_store.store._catalog import runs_container

    runs_container(from_context(target.store.runs.context), "raw")
    raw = str(uuid.uuid4())
    response = target.post("metadata/raw", _node(raw, {"start": {"uid": raw, "time": 1.0}}, [RUN]))
    assert response.status_code == 200, response.text
    uid = _save(target, f"{target.name}-inside-{secrets.token_hex(4)}")
    response = target.post(f"metadata/analysis/{uid}", _node("extra", {}, []))
    assert response.status_code == 200, response.text


def test_provenance_cannot_be_bypassed_on_the_server(served, capsys):
    attempts, refused = _bypass_attempts(served)
    _allowed_elsewhere(served)
    figure(
        capsys,
        "provenance bypass",
        "bas serve, write key, plain HTTP: nodes in the analysis container without the "
        "BlueskyRun spec, with another spec or version, with forged or no provenance, created, "
        "registered, replaced (PUT, merge and JSON patch) or deleted and recreated: refused "
        "(400); a genuine save of the forged lineage then works",
        backend=served.name,
        attempts=attempts,
        refused=refused,
    )


def test_provenance_cannot_be_bypassed_in_the_embedded_store(embedded, capsys):
    attempts, refused = _bypass_attempts(embedded)
    _allowed_elsewhere(embedded)
    figure(
        capsys,
        "provenance bypass",
        "the embedded store's in-process app (the default store), the same attempts: refused",
        backend="embedded",
        attempts=attempts,
        refused=refused,
    )


def test_raw_catalog_of_the_embedded_store_keeps_working(embedded):
    """A plain TiledWriter files raw scans (no provenance) into the store's raw catalog; a
    plain tiled client gets a typed error (tiled's ClientError, 400) in the analysis one."""
    import event_model
    from bluesky_tiled_plugins import TiledWriter
    from tiled.client.utils import ClientError
    from tiled.structures.core import Spec

    raw = embedded.store.raw
    assert raw is not None
    writer = TiledWriter(raw)
    bundle = event_model.compose_run(metadata={"plan_name": "scan"})
    writer("start", bundle.start_doc)
    descriptor = bundle.compose_descriptor(
        name="primary",
        data_keys={"x": {"source": "sim", "dtype": "number", "shape": []}},
    )
    writer("descriptor", descriptor.descriptor_doc)
    writer("event", descriptor.compose_event(data={"x": 1.0}, timestamps={"x": 1.0}))
    writer("stop", bundle.compose_stop())
    uid = bundle.start_doc["uid"]
    assert raw[uid].metadata["stop"]["exit_status"] == "success"
    assert list(raw[uid]["primary"]["x"].read()) == [1.0]
    with pytest.raises(ClientError, match="400: only BlueskyRun containers"):
        embedded.store.runs.create_container(uid, metadata={"start": bundle.start_doc})
    with pytest.raises(ClientError, match="400: failed validation for the BlueskyRun spec"):
        embedded.store.runs.create_container(
            uid, metadata={"start": bundle.start_doc}, specs=[Spec("BlueskyRun", "3.0")]
        )
    assert uid not in embedded.store
