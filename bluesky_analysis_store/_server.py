"""``bas serve``: a tiled server for an analysis store, with keys and server-side provenance.

* Every request needs a key (tiled's single-user API key): anonymous and wrong keys get 401.
* An optional read-only key may read (GET/HEAD) and gets 403 for anything else; it is turned
  into the server's own key inside the process, after a constant-time comparison.
* A validator on the ``BlueskyRun`` spec rejects (HTTP 400) any run whose start document lacks
  valid provenance, so a client that bypasses this package cannot store a run without it.
"""

from __future__ import annotations

import copy
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError as PydanticValidationError

from ._errors import AnalysisStoreError
from ._provenance import Provenance

WRITE_KEY_ENV = "BAS_API_KEY"
READ_KEY_ENV = "BAS_READ_API_KEY"
MIN_KEY_LENGTH = 16
READ_METHODS = frozenset({"GET", "HEAD"})


def check_key(key: str | None, variable: str) -> str:
    """Refuse an empty or weak key at start-up, naming the variable and what is accepted."""
    if not key:
        raise AnalysisStoreError(
            f"${variable} is empty; set it to a random key of at least {MIN_KEY_LENGTH} letters "
            "and digits, e.g. python -c 'import secrets; print(secrets.token_hex(32))'"
        )
    if len(key) < MIN_KEY_LENGTH or not key.isascii() or not key.isalnum():
        raise AnalysisStoreError(
            f"${variable} is too weak: use at least {MIN_KEY_LENGTH} ASCII letters and digits "
            "(python -c 'import secrets; print(secrets.token_hex(32))')"
        )
    if len(set(key)) < 6:
        raise AnalysisStoreError(f"${variable} repeats too few characters to be a real secret")
    return key


def provenance_problem(metadata: Mapping[str, Any] | None) -> str | None:
    """Why a run's metadata lacks valid provenance, or None when it has it."""
    start = (metadata or {}).get("start")
    if not isinstance(start, Mapping):
        return "metadata['start'] (the start document) is missing"
    record = start.get("provenance")
    if not isinstance(record, Mapping):
        return "start['provenance'] is missing; analysis runs must record their provenance"
    try:
        provenance = Provenance.model_validate(record)
    except PydanticValidationError as error:
        details = "; ".join(
            f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors()[:5]
        )
        return f"start['provenance'] is invalid: {details}"
    if start.get("lineage_hash") != provenance.lineage_hash():
        return "start['lineage_hash'] is missing or does not match start['provenance']"
    if start.get("parent_uids") != provenance.parent_uids:
        return "start['parent_uids'] is missing or does not match start['provenance']"
    return None


def validate_bluesky_run(
    spec: Any, metadata: Any, entry: Any, structure_family: Any, structure: Any
) -> None:
    """tiled validator: refuse a BlueskyRun without valid provenance (HTTP 400)."""
    from tiled.validation_registration import ValidationError

    problem = provenance_problem(metadata)
    if problem is not None:
        raise ValidationError(problem)


def validation_registry() -> Any:
    """tiled's default validators plus ours, for ``BlueskyRun`` with and without a version."""
    from tiled.structures.core import Spec
    from tiled.validation_registration import default_validation_registry

    # a copy keeps tiled's own validators ('composite' is one TiledWriter relies on)
    registry = copy.deepcopy(default_validation_registry)
    for version in (None, "3.0"):
        registry.register(Spec("BlueskyRun", version=version), validate_bluesky_run)
    return registry


def _given_key(scope: Mapping[str, Any]) -> str | None:
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            text = value.decode("latin1")
            if text.lower().startswith("apikey "):
                return text[7:]
    from urllib.parse import parse_qs

    values = parse_qs(scope.get("query_string", b"").decode("latin1")).get("api_key")
    return values[0] if values else None


class ReadOnlyKey:
    """ASGI middleware: a second key that may only read.

    A request carrying the read-only key is refused with 403 unless it is a GET or HEAD; allowed
    requests continue with the server's own key, which never leaves the process.
    """

    def __init__(self, app: Any, read_key: str, write_key: str) -> None:
        self.app = app
        self._read = read_key.encode()
        self._write = write_key

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        given = _given_key(scope) if scope["type"] == "http" else None
        if given is None or not secrets.compare_digest(given.encode(), self._read):
            await self.app(scope, receive, send)
            return
        if scope["method"] not in READ_METHODS:
            body = b'{"detail":"this key is read-only: it may read but not write"}'
            await send(
                {
                    "type": "http.response.start",
                    "status": 403,
                    "headers": [(b"content-type", b"application/json")],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        headers = [(n, v) for n, v in scope["headers"] if n != b"authorization"]
        headers.append((b"authorization", f"Apikey {self._write}".encode()))
        query = b"&".join(
            part
            for part in scope.get("query_string", b"").split(b"&")
            if not part.startswith(b"api_key=")
        )
        await self.app({**scope, "headers": headers, "query_string": query}, receive, send)


def build_server_app(
    directory: Path,
    write_key: str,
    *,
    read_key: str | None = None,
    catalog_uri: str | None = None,
    tables_uri: str | None = None,
) -> Any:
    """The ASGI app of ``bas serve``: the store's tiled tree, keys, provenance validation."""
    from tiled.config import Authentication
    from tiled.server.app import build_app

    from ._store import RUNS_CONTAINER, catalog_tree, embedded_tree, runs_container

    check_key(write_key, WRITE_KEY_ENV)
    if read_key is not None:
        check_key(read_key, READ_KEY_ENV)
        if secrets.compare_digest(read_key.encode(), write_key.encode()):
            raise AnalysisStoreError(f"${READ_KEY_ENV} must differ from ${WRITE_KEY_ENV}")
    directory = directory.resolve()
    if catalog_uri is None:
        tree = embedded_tree(directory)
    else:
        tree = catalog_tree(catalog_uri, directory, tables_uri=tables_uri)
    # Create the runs container once, in process, before anyone connects.
    from ._store import in_process_client

    context, client = in_process_client(tree)
    try:
        runs_container(client, RUNS_CONTAINER)
    finally:
        context.close()
    app = build_app(
        tree,
        authentication=Authentication(single_user_api_key=write_key),
        validation_registry=validation_registry(),
    )
    return ReadOnlyKey(app, read_key, write_key) if read_key else app
