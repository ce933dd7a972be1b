"""``bas serve``: a real server subprocess on 127.0.0.1, keys, server-side provenance."""

from __future__ import annotations

import uuid
from typing import Any

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


def test_a_save_through_the_server_closes_no_streams(server):
    """``bas serve`` keeps no streams: a save sends none of TiledWriter's ``close_stream``
    requests (the app is asked once per store), and the run is complete."""
    from tiled.client import record_history

    spectra = np.random.default_rng(0).random((10, 32), dtype=np.float32)
    data = [{"primary": {"spectrum": s, "total": float(s.sum())}} for s in spectra]
    with server.store(WRITE_KEY) as store, record_history() as history:
        uids = [
            store.save(data, {}, provenance=make_provenance(parameters={"streams": n}))
            for n in range(2)
        ]
        assert all(store[uid].metadata["stop"]["exit_status"] == "success" for uid in uids)
    paths = [str(r.url.path) for r in history.requests]
    assert not any("/stream/close/" in path for path in paths)
    assert sum("/bas/streams/" in path for path in paths) == 1


def test_a_runs_scalar_table_is_read_in_one_request_with_the_read_only_key(server):
    from tiled.client import record_history

    data = [{"primary": {"total": 0.5 * i, "count": i, "ok": i % 2 == 0}} for i in range(5)]
    with server.store(WRITE_KEY) as writer:
        uid = writer.save(data, {}, provenance=make_provenance(parameters={"table": 1}))
    with server.store(READ_KEY) as reader, record_history() as history:
        table = reader.scalar_table(uid)
    assert len(history.requests) == 1
    assert [str(t) for t in table[["total", "count", "ok"]].dtypes] == ["float64", "int64", "bool"]
    assert table["count"].tolist() == list(range(5))


def test_save_through_the_server_and_read_with_the_read_only_key(server):
    data = [{"p": {"image": np.arange(30.0).reshape(5, 6), "x": 1.0}}]
    with server.store(WRITE_KEY) as writer:
        uid = writer.save(data, {}, provenance=make_provenance(), writers={"image": "BAS_HDF5"})
    with server.store(READ_KEY) as reader:
        np.testing.assert_array_equal(reader[uid]["p"]["image"][0], data[0]["p"]["image"])
        assert uid in reader.derived_from(make_provenance().parents[0].uid)
        # from the lineage index, through the store's route (a GET: the read-only key may ask)
        assert reader._lineage.ask("descendants", uid=make_provenance().parents[0].uid)


def test_a_lineage_question_without_its_arguments_gets_400(server):
    from bluesky_analysis_store.store._lineage_reader import ROUTE

    headers = {"Authorization": f"Apikey {READ_KEY}"}
    url = f"{server.uri}/api/v1/{ROUTE}/analysis"
    for params in (
        {"ask": "analysed", "args": "{}"},
        {"ask": "lineage", "args": '{"uid": 3}'},
        {"ask": "nothing", "args": "{}"},
        {"ask": "lineage", "args": "not json"},
    ):
        response = httpx.get(url, params=params, headers=headers)
        assert response.status_code == 400, (params, response.text)
        assert "ask" in response.text


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


# --- run.documents() (the JSON-seq exporter) ------------------------------------------------------


def _check_documents(run: Any, data: list[dict[str, Any]]) -> None:
    """``run.documents()`` (bluesky-tiled-plugins' BlueskyRun, which databroker's client is)
    gives back the run's start and stop, its descriptor, rows and external data.

    (Not ``run.v2.documents()``: bluesky-tiled-plugins 2.0.12's ``run.v2`` changes the client
    class of every run in the process, through a shallow copy of tiled's structure clients.)
    """
    import bluesky_tiled_plugins
    import databroker.client

    assert databroker.client.BlueskyRun is bluesky_tiled_plugins.BlueskyRun
    documents = list(run.documents())
    names, docs = zip(*documents, strict=True)
    assert names[0] == "start"
    assert names[-1] == "stop"
    assert docs[0] == run.metadata["start"]
    assert docs[-1] == run.metadata["stop"]
    assert {"descriptor", "event", "stream_resource", "stream_datum"} <= set(names)
    events = [doc for name, doc in documents if name == "event"]
    assert [e["data"]["x"] for e in events] == [row["p"]["x"] for row in data]
    (resource,) = [doc for name, doc in documents if name == "stream_resource"]
    assert resource["data_key"] == "image"


DOCUMENT_DATA = [{"p": {"image": np.full((2, 3), float(n)), "x": float(n)}} for n in range(3)]


def test_documents_of_a_saved_run_on_the_server(server):
    with server.store(WRITE_KEY) as writer:
        provenance = make_provenance(parameters={"documents": server.backend})
        uid = writer.save(DOCUMENT_DATA, {}, provenance=provenance, writers={"image": "BAS_HDF5"})
    with server.store(READ_KEY) as reader:
        _check_documents(reader[uid], DOCUMENT_DATA)


def test_documents_of_a_saved_run_in_the_embedded_store(tiled_catalog):
    from bluesky_analysis_store import AnalysisStore

    store = AnalysisStore(tiled_catalog.new_runs_container(), tiled_catalog.new_root())
    uid = store.save(DOCUMENT_DATA, {}, provenance=make_provenance(), writers={"image": "BAS_HDF5"})
    _check_documents(store[uid], DOCUMENT_DATA)


# --- a stalled client ----------------------------------------------------------------------------


def _timed_get(url: str, key: str, timeout: float) -> tuple[float, httpx.Response]:
    import time

    began = time.monotonic()
    response = httpx.get(url, headers={"Authorization": f"Apikey {key}"}, timeout=timeout)
    return time.monotonic() - began, response


def test_a_stalled_client_does_not_block_others(server):
    """A read-only client asks for a large array and stops reading: the others are answered
    (the one-request-at-a-time lock is not held while a response waits for its client)."""
    import socket
    from urllib.parse import urlsplit

    image = np.zeros((64, 1024, 128))  # 64 MiB: far more than the socket buffers hold
    with server.store(WRITE_KEY) as writer:
        provenance = make_provenance(parameters={"stall": server.backend})
        uid = writer.save([{"p": {"image": image}}], {}, provenance=provenance)
    path = f"/api/v1/array/full/analysis/{uid}/p/image"
    small = f"{server.uri}/api/v1/metadata/analysis/{uid}"
    # baselines: the large array read whole, a small request
    big_time, response = _timed_get(server.uri + path, READ_KEY, timeout=120)
    assert response.status_code == 200
    assert len(response.content) == image.nbytes
    small_time, _ = _timed_get(small, READ_KEY, timeout=120)
    bound = 10 * (big_time + small_time)  # generous, and relative to this machine's pace
    address = urlsplit(server.uri)
    stalled = socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    try:
        stalled.settimeout(bound)
        stalled.connect((address.hostname, address.port))
        request = (
            f"GET {path} HTTP/1.1\r\nHost: {address.netloc}\r\n"
            f"Authorization: Apikey {READ_KEY}\r\nAccept: application/octet-stream\r\n\r\n"
        )
        stalled.sendall(request.encode())
        # the server has begun to answer it (and cannot finish): then ask for other things
        assert stalled.recv(12, socket.MSG_PEEK).startswith(b"HTTP/1.1 200")
        elapsed, response = _timed_get(small, READ_KEY, timeout=bound)
        assert response.status_code == 200
        assert elapsed < bound
        elapsed, response = _timed_get(server.uri + path, WRITE_KEY, timeout=bound)
        assert response.status_code == 200
        assert len(response.content) == image.nbytes
    finally:
        stalled.close()


def test_a_client_that_stalls_is_given_up():
    """``OneRequestAtATime`` under a real uvicorn: a client that stops sending its body gets
    408, one that stops reading is cut off, and neither holds up another request meanwhile."""
    import socket
    import threading
    import time

    import uvicorn

    from bluesky_analysis_store.store._asgi import OneRequestAtATime

    big = b"x" * (16 << 20)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        body = b""
        while (message := await receive())["type"] == "http.request":
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        answer = big if scope["path"] == "/big" else b"ok %d" % len(body)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": answer})

    stall = 0.5
    port = free_port()
    config = uvicorn.Config(OneRequestAtATime(app, stall_timeout=stall), port=port)
    config.log_level = "critical"
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        for _ in range(200):  # bounded: the server starts in well under a second
            if server.started:
                break
            time.sleep(0.05)
        assert server.started
        uploading, reading = socket.socket(), socket.socket()
        reading.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        for client in (uploading, reading):
            client.settimeout(60)
            client.connect(("127.0.0.1", port))
        uploading.sendall(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nhalf")
        reading.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
        assert reading.recv(12, socket.MSG_PEEK).startswith(b"HTTP/1.1 200")
        # meanwhile another request is answered at once
        response = httpx.post(f"http://127.0.0.1:{port}/x", content=b"abc", timeout=60)
        assert response.text == "ok 3"
        assert uploading.recv(1024).startswith(b"HTTP/1.1 408")
        time.sleep(4 * stall)  # the reader keeps stalling: the server gives it up
        received = 0
        while chunk := reading.recv(1 << 20):  # ends when the server closes the connection
            received += len(chunk)
        assert 0 < received < len(big)
        uploading.close()
        reading.close()
    finally:
        server.should_exit = True
        thread.join(30)


@pytest.fixture
def new_catalog_uri(request: pytest.FixtureRequest, tmp_path: Any) -> Any:
    """The URI of a catalog database with no tables yet: an SQLite file, or a new PostgreSQL
    database in the session's cluster (dropped after)."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'catalog.db'}"
        return
    from postgres import new_database

    server = request.getfixturevalue("postgres_server")
    with new_database(server) as name:
        yield f"postgresql+asyncpg://{server}/{name}"


@pytest.mark.parametrize("new_catalog_uri", ["sqlite", "postgresql"], indirect=True)
def test_a_new_catalog_is_initialized_in_process(new_catalog_uri, tmp_path, monkeypatch):
    """No ``python -m tiled catalog init`` subprocess (seconds): tiled's tables and schema stamp
    are made in process, also from inside a running event loop (a notebook cell), once."""
    import asyncio
    import subprocess

    from sqlalchemy.ext.asyncio import create_async_engine
    from tiled.alembic_utils import get_current_revision
    from tiled.catalog.core import ALL_REVISIONS, REQUIRED_REVISION

    from bluesky_analysis_store.store._catalog import catalog_tree, initialize_catalog

    started: list[Any] = []
    real_popen = subprocess.Popen

    def popen(*args: Any, **kwargs: Any) -> Any:
        started.append(args[0] if args else kwargs.get("args"))
        return real_popen(*args, **kwargs)

    monkeypatch.setattr(subprocess, "Popen", popen)

    async def in_a_loop() -> bool:
        return initialize_catalog(new_catalog_uri)

    assert asyncio.run(in_a_loop()) is True
    assert initialize_catalog(new_catalog_uri) is False  # initialized already: left as it is
    catalog_tree(new_catalog_uri, tmp_path / "store")  # checks, initializes nothing
    assert started == []

    async def revision() -> Any:
        engine = create_async_engine(new_catalog_uri)
        try:
            return await get_current_revision(engine, ALL_REVISIONS)
        finally:
            await engine.dispose()

    assert asyncio.run(revision()) == REQUIRED_REVISION


def _server_app(directory: Any, monkeypatch: Any) -> Any:
    """``bas serve``'s app in process (tests/test_access.py explains the settings)."""
    from tiled.server.settings import get_settings

    from bluesky_analysis_store.server import _server

    settings = get_settings()
    monkeypatch.setattr(settings, "single_user_api_key", settings.single_user_api_key)
    return _server.build_server_app(directory, WRITE_KEY, read_key=READ_KEY)


def _started(app: Any) -> Any:
    import warnings

    from starlette.testclient import TestClient

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
        return TestClient(app, headers={"Authorization": f"Apikey {WRITE_KEY}"})


def test_the_runs_container_is_made_as_the_server_starts(tmp_path, monkeypatch):
    """Without a first app: the served app makes ``analysis`` as it starts (the specs an
    embedded store gives it), finds it the next time, and refuses a foreign one."""
    from bluesky_analysis_store import AnalysisStoreError
    from bluesky_analysis_store.store._catalog import CATALOG_SPEC, embedded_tree, in_process_client

    expected = [{"name": CATALOG_SPEC[0], "version": CATALOG_SPEC[1]}]
    for _ in range(2):  # a new store, then the same store again
        with _started(_server_app(tmp_path / "store", monkeypatch)) as client:
            root = client.get("/api/v1/search/").json()["data"]
            assert [node["id"] for node in root] == ["analysis"]
            assert root[0]["attributes"]["specs"] == expected
            assert root[0]["attributes"]["metadata"] == {}

    context, plain = in_process_client(embedded_tree(tmp_path / "foreign"))
    try:
        plain.create_container("analysis")
    finally:
        context.close()
    with (
        pytest.raises(AnalysisStoreError, match="not a CatalogOfBlueskyRuns"),
        _started(_server_app(tmp_path / "foreign", monkeypatch)),
    ):
        pass
