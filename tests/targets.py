"""A store reached over HTTP as an attacker would: the embedded store's in-process app, or a
real ``bas serve`` (write key to write, read-only key to read). Shared by the tests of the
store's app rules (tests/test_provenance_rule.py, tests/test_containment.py)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from served import READ_KEY, WRITE_KEY, Server

from bluesky_analysis_store import AnalysisStore


@dataclass
class Target:
    """A store and raw HTTP access to its app."""

    name: str
    api: str  # ".../api/v1/"
    write: httpx.Client
    read: httpx.Client  # the read-only key on a server; the same client embedded
    files: Path  # the store's files/ (tiled's readable storage)
    store: AnalysisStore

    def post(self, route: str, body: dict[str, Any]) -> httpx.Response:
        return self.write.post(self.api + route, json=body)

    def get(self, route: str, **params: Any) -> httpx.Response:
        return self.read.get(self.api + route, params=params)

    def data_sources(self, path: str) -> list[dict[str, Any]]:
        response = self.write.get(
            self.api + f"metadata/{path}", params={"include_data_sources": True}
        )
        response.raise_for_status()
        return list(response.json()["data"]["attributes"]["data_sources"])


@contextmanager
def served_target(server: Server) -> Iterator[Target]:
    with (
        httpx.Client(headers={"Authorization": f"Apikey {WRITE_KEY}"}, timeout=60) as write,
        httpx.Client(headers={"Authorization": f"Apikey {READ_KEY}"}, timeout=60) as read,
        server.store(WRITE_KEY) as store,
    ):
        yield Target(
            server.backend, f"{server.uri}/api/v1/", write, read, server.directory / "files", store
        )


@contextmanager
def embedded_target(directory: Path) -> Iterator[Target]:
    with AnalysisStore.open(directory, raw="raw") as store:
        context = store.runs.context
        http = context.http_client
        yield Target("embedded", str(context.api_uri), http, http, directory / "files", store)
