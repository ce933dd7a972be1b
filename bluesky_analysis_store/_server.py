"""``bas serve``: a tiled server for an analysis store, with keys and server-side provenance.

* Every request needs a key (tiled's single-user API key): anonymous and wrong keys get 401,
  on every route but server info, health and the web UI's static shell (tiled alone would let
  anyone read array chunks through its zarr routes).
* An optional read-only key may read (GET/HEAD) and gets 403 for anything else; it is turned
  into the server's own key inside the process, after a constant-time comparison.
* Keys given in a URL (``?api_key=``) are moved into the header before anything logs the URL.
* A validator on the ``BlueskyRun`` spec (any version) rejects (HTTP 400) any run whose start
  document lacks valid provenance, so a client that bypasses this package cannot store a run
  without it; nor can the write key strip the spec off a stored run to skip the validator.
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
RUN_SPEC = "BlueskyRun"
METADATA_ROUTE = "/api/v1/metadata/"
API_KEY_COOKIE = "tiled_api_key"
#: Answer without a key (tiled's server info, health check, web UI shell, API schema); every
#: other route needs the write or the read-only key.
PUBLIC_ROUTES = frozenset(
    {"/", "/api/v1", "/api/v1/", "/healthz", "/tiled-ui-settings", "/ui", "/openapi.json"}
)


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


class _AnyVersionRegistry:
    """A tiled validation registry in which ``BlueskyRun`` of *any* version is ours.

    tiled skips specs it has no validator for (``reject_undeclared_specs`` is off by default),
    so registering only ``BlueskyRun`` and ``BlueskyRun 3.0`` would let a client store a run
    without provenance by labelling it ``BlueskyRun`` version ``2.0``.
    """

    def __init__(self, registry: Any) -> None:
        self._registry = registry

    def __contains__(self, spec: Any) -> bool:
        return getattr(spec, "name", None) == RUN_SPEC or spec in self._registry

    def __call__(self, spec: Any) -> Any:
        return self.dispatch(spec)

    def dispatch(self, spec: Any) -> Any:
        if getattr(spec, "name", None) == RUN_SPEC:
            return validate_bluesky_run
        return self._registry.dispatch(spec)

    def register(self, spec: Any, func: Any) -> None:
        self._registry.register(spec, func)


def validation_registry() -> Any:
    """tiled's default validators plus ours, for ``BlueskyRun`` of every version."""
    from tiled.structures.core import Spec
    from tiled.validation_registration import default_validation_registry

    # a copy keeps tiled's own validators ('composite' is one TiledWriter relies on)
    registry = copy.deepcopy(default_validation_registry)
    for version in (None, "3.0"):
        registry.register(Spec(RUN_SPEC, version=version), validate_bluesky_run)
    return _AnyVersionRegistry(registry)


def _split_query(query: bytes) -> tuple[list[str], bytes]:
    """``(api_key values, query without them)``; names are compared URL-decoded."""
    from urllib.parse import unquote_plus

    keys, kept = [], []
    for part in query.split(b"&"):
        if not part:
            continue
        name, _, value = part.partition(b"=")
        if unquote_plus(name.decode("latin1")) == "api_key":
            keys.append(unquote_plus(value.decode("latin1")))
        else:
            kept.append(part)
    return keys, b"&".join(kept)


def _header_key(headers: list[tuple[bytes, bytes]]) -> str | None:
    for name, value in headers:
        if name == b"authorization":
            text = value.decode("latin1")
            return text[7:] if text.lower().startswith("apikey ") else None
    return None


def _cookie_key(headers: list[tuple[bytes, bytes]]) -> str | None:
    from http.cookies import CookieError, SimpleCookie

    for name, value in headers:
        if name == b"cookie":
            try:
                morsel = SimpleCookie(value.decode("latin1")).get(API_KEY_COOKIE)
            except CookieError:
                continue
            if morsel is not None:
                return morsel.value
    return None


def _is_public(path: str) -> bool:
    """Routes that answer without a key: server info, health, the web UI's static pages."""
    return path in PUBLIC_ROUTES or path.startswith("/ui/")


def _same(given: str | None, key: bytes) -> bool:
    """Constant-time comparison (of bytes: ``compare_digest`` refuses non-ASCII str)."""
    return given is not None and secrets.compare_digest(given.encode("utf-8"), key)


class KeyGuard:
    """ASGI middleware in front of tiled: keys out of URLs, a read-only key, BlueskyRun specs.

    * An ``api_key`` in the query string is moved into the ``Authorization`` header (tiled gives
      the query precedence, so it replaces a header key) and removed from the query string *in
      place*: the server's access log, which formats the same scope object, then never shows a
      key even at debug level (and tiled does not copy it into a cookie).
    * Deny by default: a request without the write or the read-only key gets 401, except on
      :data:`PUBLIC_ROUTES`. tiled alone answers its zarr routes (array chunks, table columns)
      and its GraphQL route without any key.
    * A request carrying the read-only key is refused with 403 unless it is a GET or HEAD;
      allowed requests continue with the server's own key, which never leaves the process.
    * With the write key, PUT/PATCH of a ``BlueskyRun`` node's metadata must keep the
      ``BlueskyRun`` spec (tiled validates only the specs a node ends up with, so dropping the
      spec would skip the provenance validator): 400 otherwise.

    Keys are compared with :func:`secrets.compare_digest`, in the order tiled reads them
    (query, header, cookie).
    """

    def __init__(self, app: Any, tree: Any, write_key: str, read_key: str | None = None) -> None:
        self.app = app
        self._tree = tree
        self._write_text = write_key
        self._write = write_key.encode()
        self._read = read_key.encode() if read_key else None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        keys, query = _split_query(scope.get("query_string", b""))
        headers = list(scope.get("headers", []))
        if keys:
            headers = [(n, v) for n, v in headers if n != b"authorization"]
            headers.append((b"authorization", f"Apikey {keys[0]}".encode()))
            # in place, on purpose: the server logs this scope's query string
            scope["query_string"] = query
            scope["headers"] = headers
        given = _header_key(headers)
        if given is None:  # tiled falls back on the cookie, also behind a Bearer header
            given = _cookie_key(headers)
        method = scope.get("method", "GET")  # a websocket only reads
        if self._read is not None and _same(given, self._read):
            if method not in READ_METHODS:
                await _reply(send, 403, "this key is read-only: it may read but not write")
                return
            headers = [(n, v) for n, v in headers if n not in (b"authorization", b"cookie")]
            headers.append((b"authorization", f"Apikey {self._write_text}".encode()))
            scope["headers"] = headers
        elif _same(given, self._write):
            if method in ("PUT", "PATCH") and scope["path"].startswith(METADATA_ROUTE):
                receive = await self._guard_run_spec(scope, receive, send)
                if receive is None:
                    return
        elif not _is_public(scope["path"]):
            # tiled itself lets a request without any key read its zarr routes and GraphQL
            if scope["type"] == "websocket":
                await receive()  # websocket.connect
                await send({"type": "websocket.close", "code": 1008})
            else:
                await _reply(send, 401, "a valid API key is required (header 'Apikey KEY')")
            return
        await self.app(scope, receive, send)

    async def _guard_run_spec(self, scope: Any, receive: Any, send: Any) -> Any:
        """The request's ``receive`` (body replayed), or None when refused with 400."""
        chunks = []
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Any:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        segments = [s for s in scope["path"][len(METADATA_ROUTE) :].split("/") if s]
        try:
            entry = await self._tree.lookup_adapter(segments) if segments else None
            before = _spec_names(getattr(entry, "specs", None) or [])
            after = _specs_after(scope["method"], body, getattr(entry, "specs", None) or [])
        except Exception:  # tiled answers malformed requests and missing nodes itself
            return replay
        if RUN_SPEC in before and after is not None and RUN_SPEC not in after:
            await _reply(
                send,
                400,
                f"the {RUN_SPEC} spec of a run cannot be removed (its provenance would no longer "
                "be validated); delete the run instead",
            )
            return None
        return replay


def _spec_name(spec: Any) -> Any:
    """A spec's name, whether it is tiled's ``Spec`` or its JSON form (None if it has none)."""
    return spec.get("name") if isinstance(spec, Mapping) else getattr(spec, "name", None)


def _spec_names(specs: Any) -> set[str]:
    return {str(_spec_name(s) or "") for s in specs}


def _specs_after(method: str, body: bytes, current: list[Any]) -> set[str] | None:
    """The spec names a PUT/PATCH of metadata leaves, computed as tiled does; None: unchanged."""
    import json

    from tiled.server import schemas

    document = json.loads(body)
    if method == "PUT":
        put = schemas.PutMetadataRequest.model_validate(document)
        return None if put.specs is None else _spec_names(put.specs)
    patch = schemas.PatchMetadataRequest.model_validate(document)
    if patch.specs is None:
        return None
    if patch.content_type == "application/json-patch+json":
        from jsonpatch import apply_patch

        def plain(spec: Any) -> Any:
            name = _spec_name(spec)
            return {"name": name} if name is not None else spec

        operations = [
            {**op, "value": plain(op["value"])} if "value" in op else dict(op) for op in patch.specs
        ]
        return _spec_names(apply_patch([plain(s) for s in current], operations))
    return _spec_names(patch.specs)  # merge patch: a list replaces the list


async def _reply(send: Any, status: int, detail: str) -> None:
    import json

    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def build_server_app(
    directory: Path,
    write_key: str,
    *,
    read_key: str | None = None,
    catalog_uri: str | None = None,
    tables_uri: str | None = None,
) -> Any:
    """The ASGI app of ``bas serve``: the store's tiled tree, keys, provenance validation."""
    check_key(write_key, WRITE_KEY_ENV)  # before the slow imports: refuse weak keys at once
    if read_key is not None:
        check_key(read_key, READ_KEY_ENV)
        if secrets.compare_digest(read_key.encode(), write_key.encode()):
            raise AnalysisStoreError(f"${READ_KEY_ENV} must differ from ${WRITE_KEY_ENV}")
    from tiled.config import Authentication
    from tiled.server.app import build_app

    from ._store import RUNS_CONTAINER, catalog_tree, embedded_tree, runs_container

    directory = directory.resolve()
    if catalog_uri is None:
        from ._locks import hold_embedded_store

        directory.mkdir(parents=True, exist_ok=True)
        hold_embedded_store(directory)  # for the server's lifetime: DuckDB admits one process
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
    if tables_uri is None or tables_uri.startswith("duckdb:"):
        from ._asgi import OneRequestAtATime

        app = OneRequestAtATime(app)  # the DuckDB file's one connection, shared by requests
    return KeyGuard(app, tree, write_key, read_key)
