"""``bas serve``: a tiled server for an analysis store, with keys and server-side provenance.

* Every request needs a key (tiled's single-user API key): anonymous and wrong keys get 401,
  on every route but server info, health and the web UI's static shell (tiled alone would let
  anyone read array chunks through its zarr routes).
* An optional read-only key may read (GET/HEAD) and gets 403 for anything else; it is turned
  into the server's own key inside the process, after a constant-time comparison.
* Keys given in a URL (``?api_key=``) are moved into the header before anything logs the URL;
  a valid one opening a page (tiled's ``/`` and ``/ui/...``, the lineage page) is kept in
  tiled's cookie, as tiled does, so that the page's links work for the same viewer.
* The app is the store's own (:func:`._app.build_store_app`, the embedded store's too): a run
  in the analysis container must carry valid provenance however it is created or changed, and
  nothing outside the store is registered or served (HTTP 400/403, see :mod:`._tree_rules`).
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

from ..core._environment import API_KEY_ENV, READ_KEY_ENV
from ..core._errors import AnalysisStoreError
from ..store._asgi import reply
from ._lineage_page import LINEAGE_PAGE

MIN_KEY_LENGTH = 16
READ_METHODS = frozenset({"GET", "HEAD"})
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


def _sets_key_cookie(path: str) -> bool:
    """Pages a browser opens with ``?api_key=``: tiled's own (its ``move_api_key`` dependency,
    on ``/`` and ``/ui/...``) and the lineage page."""
    return path == "/" or path.startswith(("/ui/", LINEAGE_PAGE))


def _key_cookie(key: str) -> tuple[bytes, bytes]:
    """The cookie tiled sets from ``?api_key=`` (``move_api_key`` with its app's ``set_cookies``
    defaults: HttpOnly, SameSite=lax, path /). Keys are ASCII letters and digits
    (:func:`check_key`): nothing to quote."""
    return b"set-cookie", f"{API_KEY_COOKIE}={key}; HttpOnly; Path=/; SameSite=lax".encode()


async def _redirect_with_cookie(send: Any, location: bytes, cookie: tuple[bytes, bytes]) -> None:
    """303 to ``location`` (the page without the key in its URL), setting the key's cookie."""
    await send(
        {
            "type": "http.response.start",
            "status": 303,
            "headers": [(b"location", location), cookie, (b"content-length", b"0")],
        }
    )
    await send({"type": "http.response.body", "body": b""})


def _same(given: str | None, key: bytes) -> bool:
    """Constant-time comparison (of bytes: ``compare_digest`` refuses non-ASCII str)."""
    return given is not None and secrets.compare_digest(given.encode("utf-8"), key)


class KeyGuard:
    """ASGI middleware in front of tiled: keys out of URLs, a read-only key.

    * An ``api_key`` in the query string is moved into the ``Authorization`` header (tiled gives
      the query precedence, so it replaces a header key) and removed from the query string *in
      place*: the server's access log, which formats the same scope object, then never shows a
      key even at debug level. tiled does not see it there to copy it into its cookie: a
      valid key opening a page is put there by the guard (:func:`_sets_key_cookie`).
    * Deny by default: a request without the write or the read-only key gets 401, except on
      :data:`PUBLIC_ROUTES`. tiled alone answers its zarr routes (array chunks, table columns)
      and its GraphQL route without any key.
    * A request carrying the read-only key is refused with 403 unless it is a GET or HEAD;
      allowed requests continue with the server's own key, which never leaves the process.

    Keys are compared with :func:`secrets.compare_digest`, in the order tiled reads them
    (query, header, cookie).
    """

    def __init__(self, app: Any, write_key: str, read_key: str | None = None) -> None:
        self.app = app
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
        valid = False
        if self._read is not None and _same(given, self._read):
            if method not in READ_METHODS:
                await reply(send, 403, "this key is read-only: it may read but not write")
                return
            valid = True
            headers = [(n, v) for n, v in headers if n not in (b"authorization", b"cookie")]
            headers.append((b"authorization", f"Apikey {self._write_text}".encode()))
            scope["headers"] = headers
        elif _same(given, self._write):
            valid = True
        elif not _is_public(scope["path"]):
            # tiled itself lets a request without any key read its zarr routes and GraphQL
            if scope["type"] == "websocket":
                await receive()  # websocket.connect
                await send({"type": "websocket.close", "code": 1008})
            else:
                await reply(send, 401, "a valid API key is required (header 'Apikey KEY')")
            return
        if valid and keys and scope["type"] == "http" and _sets_key_cookie(scope["path"]):
            await self._with_key_cookie(scope, receive, send, keys[0])
            return
        await self.app(scope, receive, send)

    async def _with_key_cookie(self, scope: Any, receive: Any, send: Any, key: str) -> None:
        """A page opened with a valid ``?api_key=``: tiled's cookie, so that the page's links
        (and tiled's web UI) work for the same viewer with the same key. The lineage page
        answers with a redirect to itself without the key, which so leaves the address bar
        and the browser's history; tiled's pages are served with the cookie added."""
        cookie = _key_cookie(key)
        if scope["path"].startswith(LINEAGE_PAGE):
            # the path as sent (still %-encoded: no header can be smuggled into Location)
            path = scope.get("raw_path") or scope["path"].encode()
            query = scope["query_string"]
            location = path + (b"?" + query if query else b"")
            await _redirect_with_cookie(send, location, cookie)
            return

        async def send_with_cookie(message: Any) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), cookie]}
            await send(message)

        await self.app(scope, receive, send_with_cookie)


def keys_from_environment() -> tuple[str, str | None]:
    """``(write key, read-only key or None)`` from ``$BAS_API_KEY`` and ``$BAS_READ_API_KEY``
    (unchecked: :func:`check_keys`)."""
    return os.environ.get(API_KEY_ENV, ""), os.environ.get(READ_KEY_ENV) or None


def check_keys(write_key: str, read_key: str | None) -> None:
    """Refuse weak keys, and a read-only key equal to the write key, naming the variable."""
    check_key(write_key, API_KEY_ENV)
    if read_key is not None:
        check_key(read_key, READ_KEY_ENV)
        if secrets.compare_digest(read_key.encode(), write_key.encode()):
            raise AnalysisStoreError(f"${READ_KEY_ENV} must differ from ${API_KEY_ENV}")


def served_tree(
    directory: Path, *, catalog_uri: str | None = None, tables_uri: str | None = None
) -> Any:
    """The tiled tree ``bas serve`` serves, with what is missing made: the catalog's tables,
    a moved store's recorded paths, the lineage index, and (when its app starts) the runs
    container. Each step only checks when it finds its work done, so a second call on the
    same store (a worker of ``bas serve --workers``, after the parent's) writes nothing."""
    from ..store._catalog import catalog_tree, create_runs_container_at_start, embedded_tree

    directory = directory.resolve()
    if catalog_uri is None:
        from ..store._locks import hold_embedded_store

        directory.mkdir(parents=True, exist_ok=True)
        hold_embedded_store(directory)  # for the server's lifetime: DuckDB admits one process
        tree = embedded_tree(directory)
    else:
        tree = catalog_tree(catalog_uri, directory, tables_uri=tables_uri)
    create_runs_container_at_start(tree)  # when the app starts, before anyone connects
    return tree


def build_server_app(
    directory: Path,
    write_key: str,
    *,
    read_key: str | None = None,
    catalog_uri: str | None = None,
    tables_uri: str | None = None,
) -> Any:
    """The ASGI app of ``bas serve`` (of each of its workers): the store's app
    (:func:`._app.build_store_app`) on :func:`served_tree`, with the lineage page
    (:mod:`._lineage_page`), behind :class:`KeyGuard`."""
    check_keys(write_key, read_key)  # before the slow imports: refuse weak keys at once
    from tiled.config import Authentication

    from ..store._app import build_store_app
    from ._lineage_page import lineage_page_router

    tree = served_tree(directory, catalog_uri=catalog_uri, tables_uri=tables_uri)
    app = build_store_app(
        tree,
        authentication=Authentication(single_user_api_key=write_key),
        routers=[lineage_page_router()],  # /lineage/UID: a run's page, for a browser
    )
    return KeyGuard(app, write_key, read_key)
