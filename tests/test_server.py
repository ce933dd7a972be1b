"""``bas serve``: a real server subprocess on 127.0.0.1, keys, server-side provenance."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
from helpers import free_port, make_provenance

from bluesky_analysis_store import AnalysisStore

WRITE_KEY = secrets.token_hex(20)
READ_KEY = secrets.token_hex(20)


@dataclass
class Server:
    uri: str
    directory: Path

    def store(self, key: str) -> AnalysisStore:
        return AnalysisStore.open(self.uri, api_key=key, root=self.directory / "files")


def _bas_serve(
    directory: Path, *extra: str, env: dict[str, str], log: Path
) -> subprocess.Popen[bytes]:
    """Start ``bas serve``; its output goes to ``log`` (a pipe nobody reads could block it)."""
    command = [sys.executable, "-m", "bluesky_analysis_store.cli", "serve", str(directory), *extra]
    with log.open("wb") as out:
        return subprocess.Popen(
            command, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT
        )


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def server(request, tmp_path_factory) -> Iterator[Server]:
    directory = tmp_path_factory.mktemp(f"served-{request.param}")
    extra: list[str] = []
    if request.param == "postgresql":
        pg = request.getfixturevalue("postgres_server")
        extra = ["--catalog", f"postgresql+asyncpg://{pg}/catalog"]
        extra += ["--tables", f"postgresql://{pg}/tables"]
    port = free_port()
    env = {"BAS_API_KEY": WRITE_KEY, "BAS_READ_API_KEY": READ_KEY}
    log = directory.parent / f"{directory.name}.log"
    process = _bas_serve(directory, "--port", str(port), *extra, env=env, log=log)
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180  # tiled imports and initializes its catalog: slow here
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"bas serve exited: {log.read_text()}")
            try:
                if httpx.get(f"{uri}/api/v1/", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("bas serve did not become ready in 180 s")
            time.sleep(0.5)
        yield Server(uri, directory)
    finally:
        process.terminate()
        process.wait(timeout=30)


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
            provenance=make_provenance(),
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
