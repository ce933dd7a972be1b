"""Access to a served store (issue 6, part 5): keys, the read-only key, no key leaks.

Against the real ``bas serve`` subprocesses of ``bas_server`` (tests/conftest.py): SQLite with
``bas serve``'s own logging, PostgreSQL with every logger at DEBUG and the access log on.
"""

from __future__ import annotations

import base64
import json
import secrets
import subprocess
import sys
import urllib.parse
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from helpers import figure, free_port, make_provenance
from served import READ_KEY, WRITE_KEY, Server, bas_serve

WRONG_KEY = f"Wrong{secrets.token_hex(16)}"
#: answer without a key (server info, health, the web UI's shell, the API schema)
PUBLIC = {"/", "/healthz", "/tiled-ui-settings", "/api/v1/", "/ui/{path}", "/openapi.json"}
READ_METHODS = {"get", "head"}


@dataclass
class SavedRun:
    uid: str
    run: str
    stream: str
    array: str
    table: str


@pytest.fixture(scope="module")
def saved(bas_server: Server) -> SavedRun:
    """One run saved with the write key, with every key also in the client's environment."""
    with pytest.MonkeyPatch.context() as env:
        for name in ("BAS_API_KEY", "TILED_API_KEY", "TILED_SINGLE_USER_API_KEY"):
            env.setenv(name, WRITE_KEY)
        env.setenv("BAS_READ_API_KEY", READ_KEY)
        data = [{"p": {"image": np.arange(30.0).reshape(5, 6), "x": 1.0}}]
        with bas_server.store(WRITE_KEY) as writer:
            # a lineage of its own: a save of an already saved lineage writes nothing
            provenance = make_provenance(parameters={"test": "access"})
            uid = writer.save(data, {}, provenance=provenance, writers={"image": "BAS_HDF5"})
    run = f"analysis/{uid}"
    return SavedRun(uid, run, f"{run}/p", f"{run}/p/image", f"{run}/p/internal")


def _routes(server: Server) -> list[tuple[str, str]]:
    """Every (path template, method) the served app declares."""
    schema = httpx.get(f"{server.uri}/openapi.json").json()
    return [(path, method) for path, ops in schema["paths"].items() for method in sorted(ops)]


def _url(server: Server, template: str, saved: SavedRun) -> str:
    if any(f in template for f in ("/array/", "/asset", "/ragged/", "/awkward/", "/zarr/")):
        node = saved.array
    elif "/table/" in template:
        node = saved.table
    else:
        node = saved.run
    if "{path}." in template or "{path}zarr" in template:  # '/zarr/v2{path}.zattrs' and kin
        node = f"/{node}/"
    return server.uri + template.replace("{path}", node).replace("{block}", "0")


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    """One client: creating one per request costs ~50 ms."""
    with httpx.Client(timeout=30) as client:
        yield client


def _request(
    http: httpx.Client, method: str, url: str, key: str | None, *, where: str = "header"
) -> int:
    headers = {}
    if key and where == "header":
        headers["Authorization"] = f"Apikey {key}"
    if key and where == "cookie":
        headers["Cookie"] = f"tiled_api_key={key}"
    params = {"api_key": key} if key and where == "query" else {}
    http.cookies.clear()  # never a cookie the server set
    return http.request(method.upper(), url, headers=headers, params=params).status_code


def _run_is_intact(server: Server, saved: SavedRun) -> None:
    with server.store(READ_KEY) as reader:
        np.testing.assert_array_equal(
            reader[saved.uid]["p"]["image"][0], np.arange(30.0).reshape(5, 6)
        )
        assert reader[saved.uid].metadata["start"]["uid"] == saved.uid


def test_every_route_needs_a_key_and_the_read_only_key_cannot_write(
    bas_server, saved, http, capsys
):
    """(a) no key / wrong key: 401 everywhere but public routes; read-only key: 403 on writes."""
    routes = _routes(bas_server)
    families = {template.split("{")[0] for template, _ in routes}
    assert families >= {
        "/api/v1/metadata/",
        "/api/v1/search/",
        "/api/v1/array/full/",
        "/api/v1/table/full/",
        "/zarr/v2/",
    }
    cases = failures = 0
    problems = []
    for template, method in routes:
        url = _url(bas_server, template, saved)
        public = template in PUBLIC
        expected: list[tuple[str | None, str, set[int]]] = [
            (None, "header", {200} if public else {401}),
            (WRONG_KEY, "header", {200} if public else {401}),
            (WRONG_KEY, "query", {200} if public else {401}),
            (WRONG_KEY, "cookie", {200} if public else {401}),
        ]
        if method not in READ_METHODS:
            expected += [(READ_KEY, where, {403}) for where in ("header", "query", "cookie")]
        else:
            # reads pass authentication (some answer 4xx for want of parameters, never 401/403)
            expected += [(READ_KEY, "header", set(range(200, 600)) - {401, 403})]
        for key, where, statuses in expected:
            cases += 1
            status = _request(http, method, url, key, where=where)
            if status not in statuses:
                failures += 1
                name = key and key[:9]
                problems.append(f"{method.upper()} {template} key={name} {where}: {status}")
    assert not problems, "\n".join(problems)
    _run_is_intact(bas_server, saved)
    figure(
        capsys,
        "access",
        "every route of the served app: no key and wrong keys (header, query, cookie) get 401 "
        "(but the public ones); the read-only key gets 403 on every write",
        backend=bas_server.backend,
        routes=len(routes),
        cases=cases,
        passed=cases - failures,
    )


def test_read_only_key_reads_data_of_every_kind(bas_server, saved, capsys):
    reads = [
        f"/api/v1/metadata/{saved.run}",
        "/api/v1/search/analysis",
        f"/api/v1/search/{saved.stream}",
        f"/api/v1/array/full/{saved.array}",
        f"/api/v1/array/block/{saved.array}?block=0,0,0",
        f"/api/v1/table/full/{saved.table}",
        f"/api/v1/table/partition/{saved.table}?partition=0",
        f"/zarr/v2/{saved.array}/0.0.0",
    ]
    for path in reads:
        for key in (READ_KEY, WRITE_KEY):
            response = httpx.get(bas_server.uri + path, headers={"Authorization": f"Apikey {key}"})
            assert response.status_code == 200, (path, response.text)
        assert httpx.get(bas_server.uri + path).status_code == 401, path
    figure(
        capsys,
        "access",
        "the read-only key reads metadata, searches, arrays, tables and zarr chunks; "
        "no key gets 401",
        backend=bas_server.backend,
        cases=len(reads),
        passed=len(reads),
    )


def test_bluesky_run_spec_cannot_be_dropped_or_dodged(bas_server, saved, capsys):
    """Dropping the BlueskyRun spec (PUT, merge and JSON patch) or using another version: 400."""
    from tiled.structures.core import Spec

    headers = {"Authorization": f"Apikey {WRITE_KEY}"}
    url = f"{bas_server.uri}/api/v1/metadata/{saved.run}"
    attempts = [
        ("PUT", {"metadata": {"start": {"uid": saved.uid}}, "specs": []}),
        ("PATCH", {"content-type": "application/merge-patch+json", "specs": []}),
        (
            "PATCH",
            {
                "content-type": "application/merge-patch+json",
                "metadata": {"start": None},
                "specs": [{"name": "BlueskyRunX", "version": None}],
            },
        ),
        (
            "PATCH",
            {
                "content-type": "application/json-patch+json",
                "specs": [{"op": "remove", "path": "/0"}],
            },
        ),
    ]
    for method, body in attempts:
        response = httpx.request(method, url, headers=headers, json=body)
        assert response.status_code == 400, (method, body, response.text)
        assert "spec of a run cannot be removed" in response.text
    # keeping the spec: the provenance validator runs on the new metadata
    response = httpx.patch(
        url,
        headers=headers,
        json={
            "content-type": "application/merge-patch+json",
            "metadata": {"start": None},
            "specs": None,
        },
    )
    assert response.status_code == 400, response.text
    assert "failed validation for the BlueskyRun spec" in response.text
    _run_is_intact(bas_server, saved)
    # a harmless metadata patch that keeps the spec still works
    response = httpx.patch(
        url,
        headers=headers,
        json={
            "content-type": "application/merge-patch+json",
            "metadata": {"note": "ok"},
            "specs": None,
        },
    )
    assert response.status_code == 200, response.text
    # a BlueskyRun of another version is validated too (tiled skips specs it does not know)
    from tiled.client import from_uri
    from tiled.client.utils import ClientError

    client = from_uri(bas_server.uri, api_key=WRITE_KEY)
    try:
        with pytest.raises(ClientError, match="400: failed validation for the BlueskyRun"):
            client["analysis"].create_container(
                secrets.token_hex(8), metadata={}, specs=[Spec("BlueskyRun", version="2.0")]
            )
    finally:
        client.context.close()
    cases = len(attempts) + 3
    figure(
        capsys,
        "access",
        "the write key cannot drop a run's BlueskyRun spec (PUT, merge and JSON patch) or dodge "
        "the provenance validator with another spec version: 400",
        backend=bas_server.backend,
        cases=cases,
        passed=cases,
    )


# --- (b) constant-time comparison --------------------------------------------------------------


def test_keys_are_compared_in_constant_time(tmp_path, monkeypatch, capsys):
    """tiled's single-user check and ours go through ``secrets.compare_digest``: patch it."""
    import hmac

    from starlette.testclient import TestClient
    from tiled.server import authentication

    from bluesky_analysis_store.server import _server

    # the code objects name compare_digest, and no '==' on keys is left to replace it
    for function in (
        authentication.get_current_principal_from_api_key,
        authentication.get_scopes_from_api_key,
    ):
        assert "compare_digest" in function.__code__.co_names, function
    assert secrets.compare_digest is hmac.compare_digest
    calls: list[tuple[Any, Any]] = []
    real = secrets.compare_digest

    def counting(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return real(a, b)

    from tiled.server.settings import get_settings

    # tiled's build_app writes the single-user key into the process-wide cached settings,
    # which every in-process tiled app of this session reads: put the session's key back after
    settings = get_settings()
    monkeypatch.setattr(settings, "single_user_api_key", settings.single_user_api_key)
    app = _server.build_server_app(tmp_path / "store", WRITE_KEY, read_key=READ_KEY)
    monkeypatch.setattr(secrets, "compare_digest", counting)
    write_b, read_b = WRITE_KEY.encode(), READ_KEY.encode()
    cases = 0
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
        client = TestClient(app)
    with client:
        for key, status, pairs in [
            (WRITE_KEY, 200, [(write_b, write_b), (WRITE_KEY, WRITE_KEY)]),  # ours, tiled's
            (WRONG_KEY, 401, [(WRONG_KEY.encode(), read_b), (WRONG_KEY.encode(), write_b)]),
            (READ_KEY, 200, [(read_b, read_b), (WRITE_KEY, WRITE_KEY)]),  # ours, then tiled's
        ]:
            calls.clear()
            response = client.get(
                "/api/v1/metadata/analysis", headers={"Authorization": f"Apikey {key}"}
            )
            assert response.status_code == status
            for pair in pairs:
                assert pair in calls, (key[:9], calls)
            cases += 1
        # a write through tiled (a plain container at the top: the analysis container takes
        # runs only): its own check compares the key in constant time too
        calls.clear()
        response = client.post(
            "/api/v1/metadata/",
            headers={"Authorization": f"Apikey {WRITE_KEY}"},
            json={"structure_family": "container", "metadata": {}, "specs": []},
        )
        assert response.status_code == 200, response.text
        assert (WRITE_KEY, WRITE_KEY) in calls
        cases += 1
    figure(
        capsys,
        "access",
        "keys are compared in constant time (secrets.compare_digest), by tiled and by bas serve",
        cases=cases,
        passed=cases,
    )


# --- (c) keys never logged, never stored --------------------------------------------------------


def _forms(key: str) -> list[bytes]:
    """The key as it could appear: raw, URL-encoded, in a base64 header value."""
    return [
        key.encode(),
        urllib.parse.quote(key).encode(),
        urllib.parse.quote_plus(key).encode(),
        base64.b64encode(key.encode()),
        base64.b64encode(f"Apikey {key}".encode()),
    ]


def _postgres_dump(server: Server) -> bytes:
    """Both PostgreSQL databases as SQL text (catalog and tables)."""
    import glob

    assert server.postgres is not None
    pg_dump = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_dump"))[-1]
    host, port = server.postgres.split("@")[1].split(":")
    out = b""
    for database in ("catalog", "tables"):
        out += subprocess.run(
            [pg_dump, "-h", host, "-p", port, "-U", "tiled", database],
            capture_output=True,
            check=True,
            timeout=120,
        ).stdout
    return out


def _hdf5_attributes(directory: Path) -> Iterator[str]:
    import h5py

    for path in directory.rglob("*"):
        if path.is_file() and path.suffix in {".h5", ".hdf5", ".nxs"}:
            with h5py.File(path, "r") as f:
                names: list[str] = ["/"]
                f.visit(names.append)
                for name in names:
                    yield from (f"{name}@{k}={v!r}" for k, v in f[name].attrs.items())


def test_keys_are_never_logged_or_stored(bas_server, saved, http, capsys):
    """(c) after a save and keys sent every way, no log line, file or document holds a key."""
    # keys in URLs too: what a browser or a careless client would send (tiled's access log
    # prints the full URL)
    for key in (WRITE_KEY, READ_KEY, WRONG_KEY):
        for where in ("query", "header", "cookie"):
            _request(http, "get", f"{bas_server.uri}/api/v1/metadata/{saved.run}", key, where=where)
            _request(http, "post", f"{bas_server.uri}/api/v1/metadata/analysis", key, where=where)
    # a failing request too (tracebacks and error logs)
    _request(http, "get", f"{bas_server.uri}/api/v1/array/block/{saved.array}?block=9", WRITE_KEY)
    keys = {"write": WRITE_KEY, "read": READ_KEY, "wrong": WRONG_KEY}
    places: dict[str, bytes] = {"log": bas_server.log.read_bytes()}
    files = [p for p in bas_server.directory.rglob("*") if p.is_file()]
    assert files, "nothing served?"
    for path in files:
        places[str(path.relative_to(bas_server.directory))] = path.read_bytes()
    if bas_server.postgres is not None:
        places["pg_dump"] = _postgres_dump(bas_server)
    with bas_server.store(READ_KEY) as reader:
        documents = [reader[uid].metadata for uid in list(reader)]
        places["start documents"] = json.dumps(documents, default=str).encode()
    places["hdf5 attributes"] = "\n".join(_hdf5_attributes(bas_server.directory)).encode()
    # the client side: provenance captured with every key in the environment
    with pytest.MonkeyPatch.context() as env:
        for name in ("BAS_API_KEY", "TILED_API_KEY", "TILED_SINGLE_USER_API_KEY"):
            env.setenv(name, WRITE_KEY)
        env.setenv("BAS_READ_API_KEY", READ_KEY)
        places["client provenance"] = make_provenance().model_dump_json().encode()
    leaks = [
        f"{which} key in {place}"
        for place, content in places.items()
        for which, key in keys.items()
        for form in _forms(key)
        if form in content
    ]
    assert not leaks, leaks
    assert saved.uid.encode() in places["start documents"]  # the search looked in the right place
    log = places["log"].decode(errors="replace")
    if bas_server.debug_logging:  # the access log was on: requests are in it, keys are not
        assert f"/api/v1/metadata/{saved.run}" in log
        assert "HTTP/1.1" in log
    level = "debug" if bas_server.debug_logging else "default"
    figure(
        capsys,
        "access",
        "no key (raw, URL-encoded, base64) in the server log, the store's files, the catalog "
        "dump, HDF5 attributes, documents or captured provenance",
        backend=bas_server.backend,
        log_level=level,
        places=len(places),
        files=len(files),
        log_lines=log.count("\n"),
        cases=len(places) * len(keys),
        passed=len(places) * len(keys) - len(leaks),
    )


# --- (d) weak keys refused at start-up -----------------------------------------------------------


def test_weak_keys_and_equal_keys_are_refused_at_start_up(tmp_path, capsys):
    strong = secrets.token_hex(20)
    cases = [
        ({"BAS_API_KEY": ""}, "$BAS_API_KEY is empty"),
        ({}, "$BAS_API_KEY is empty"),
        ({"BAS_API_KEY": "short1234"}, "$BAS_API_KEY is too weak"),
        ({"BAS_API_KEY": "0123456789abcdef-0123"}, "$BAS_API_KEY is too weak"),
        ({"BAS_API_KEY": " " * 20}, "$BAS_API_KEY is too weak"),
        ({"BAS_API_KEY": "é" * 20}, "$BAS_API_KEY is too weak"),
        ({"BAS_API_KEY": "ab" * 20}, "$BAS_API_KEY repeats too few"),
        ({"BAS_API_KEY": strong, "BAS_READ_API_KEY": "weak"}, "$BAS_READ_API_KEY is too weak"),
        (
            {"BAS_API_KEY": strong, "BAS_READ_API_KEY": strong},
            "$BAS_READ_API_KEY must differ from $BAS_API_KEY",
        ),
    ]
    processes = []
    for number, (env, _) in enumerate(cases):
        environment = {"BAS_API_KEY": "", "BAS_READ_API_KEY": "", **env}
        log = tmp_path / f"serve-{number}.log"
        directory = tmp_path / f"s{number}"
        if not env:  # the variable unset, not empty
            process = _bas_serve_without_keys(directory, log)
        else:
            process = bas_serve(directory, "--port", str(free_port()), env=environment, log=log)
        processes.append((process, log, directory))
    passed = 0
    for (process, log, directory), (env, message) in zip(processes, cases, strict=True):
        assert process.wait(timeout=120) == 1, log.read_text()
        lines = [line for line in log.read_text().splitlines() if line.strip()]
        assert len(lines) == 1, lines
        assert lines[0].startswith(f"bas serve: error: {message}"), lines
        for key in env.values():  # the refused key is not echoed
            if len(key.strip()) > 4:
                assert key not in lines[0]
        assert not directory.exists(), "a refused server must not create its store"
        passed += 1
    figure(
        capsys,
        "access",
        "empty, short, low-variety and equal keys are refused when bas serve starts; the key is "
        "not echoed and no store is created",
        cases=len(cases),
        passed=passed,
    )


def _bas_serve_without_keys(directory: Path, log: Path) -> subprocess.Popen[bytes]:
    import os

    env = {k: v for k, v in os.environ.items() if k not in ("BAS_API_KEY", "BAS_READ_API_KEY")}
    command = [sys.executable, "-m", "bluesky_analysis_store.cli", "serve", str(directory)]
    with log.open("wb") as out:
        return subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
