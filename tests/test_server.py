"""``bas serve``: a real server subprocess on 127.0.0.1, keys, server-side provenance."""

from __future__ import annotations

import uuid

import httpx
import numpy as np
import pytest
from helpers import free_port, make_provenance
from served import READ_KEY, WRITE_KEY, Server
from served import bas_serve as _bas_serve


@pytest.fixture
def server(bas_server: Server) -> Server:
    """The session's ``bas serve`` on SQLite and on PostgreSQL (tests/conftest.py)."""
    return bas_server


def _get(server: Server, key: str | None) -> int:
    headers = {"Authorization": f"Apikey {key}"} if key else {}
    return httpx.get(f"{server.uri}/api/v1/metadata/analysis", headers=headers).status_code


def test_keys_are_required_and_checked(server):
    assert _get(server, None) == 401
    assert _get(server, "0123456789abcdef0123") == 401
    assert _get(server, WRITE_KEY) == 200
    assert _get(server, READ_KEY) == 200


def test_save_through_the_server_and_read_with_the_read_only_key(server):
    data = [{"p": {"image": np.arange(30.0).reshape(5, 6), "x": 1.0}}]
    with server.store(WRITE_KEY) as writer:
        uid = writer.save(data, {}, provenance=make_provenance(), writers={"image": "BAS_HDF5"})
    with server.store(READ_KEY) as reader:
        np.testing.assert_array_equal(reader[uid]["p"]["image"][0], data[0]["p"]["image"])
        assert uid in reader.derived_from(make_provenance().parents[0].uid)


def test_read_only_key_cannot_write_and_leaves_nothing(server):
    before = sorted((server.directory / "files").rglob("*"))
    with (
        server.store(READ_KEY) as reader,
        pytest.raises(Exception, match="403: this key is read-only"),
    ):
        reader.save(
            [{"p": {"image": np.zeros(100)}}],
            {},
            # a lineage not saved yet: saving a saved lineage returns its run and writes nothing
            provenance=make_provenance(parameters={"attempt": "read-only"}),
            writers={"image": "BAS_HDF5"},
        )
    assert sorted((server.directory / "files").rglob("*")) == before
    response = httpx.post(
        f"{server.uri}/api/v1/metadata/analysis",
        headers={"Authorization": f"Apikey {READ_KEY}"},
        json={"structure_family": "container", "metadata": {}, "specs": []},
    )
    assert response.status_code == 403


def test_plain_tiled_client_cannot_store_a_run_without_provenance(server, request):
    """Server-side enforcement: a client that bypasses this package gets HTTP 400."""
    from tiled.client import from_uri
    from tiled.client.utils import ClientError
    from tiled.structures.core import Spec

    client = from_uri(server.uri, api_key=WRITE_KEY)
    request.addfinalizer(client.context.close)
    runs = client["analysis"]
    key = str(uuid.uuid4())
    for metadata, message in [
        ({"start": {"uid": key}}, "start\\['provenance'\\] is missing"),
        ({"start": {"uid": key, "provenance": {"code": {}}}}, "start\\['provenance'\\] is invalid"),
        ({}, "metadata\\['start'\\] \\(the start document\\) is missing"),
    ]:
        with pytest.raises(
            ClientError, match=f"400: failed validation for the BlueskyRun spec:\n{message}"
        ):
            runs.create_container(key, metadata=metadata, specs=[Spec("BlueskyRun", version="3.0")])
        assert key not in runs
    # a forged lineage hash is refused too
    start = dict(make_provenance_start())
    start["lineage_hash"] = "0" * 64
    with pytest.raises(ClientError, match="lineage_hash'\\] is missing or does not match"):
        runs.create_container(key, metadata={"start": start}, specs=[Spec("BlueskyRun")])


def make_provenance_start() -> dict:
    from helpers import compose

    return compose([{"p": {"x": 1.0}}], {}).documents[0][1]


def test_weak_or_missing_keys_are_refused_at_start_up(tmp_path):
    log = tmp_path / "serve.log"
    for key, message in [("", "is empty"), ("abc", "is too weak"), ("a" * 40, "repeats too few")]:
        env = {"BAS_API_KEY": key}
        process = _bas_serve(tmp_path / "s", "--port", str(free_port()), env=env, log=log)
        assert process.wait(timeout=120) == 1
        assert f"bas serve: error: $BAS_API_KEY {message}" in log.read_text()
