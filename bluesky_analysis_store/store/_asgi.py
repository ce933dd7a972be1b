"""ASGI wrapping of the store's tiled app: one request at a time for DuckDB, small replies."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

logger = logging.getLogger("bluesky_analysis_store.server")

#: Routes that never touch the table storage, not serialized: a file's stream (a file may be
#: far larger than memory should hold at once), and the health check (a busy server is alive).
UNLOCKED_ROUTES = ("/api/v1/asset/", "/healthz")


class AppWrapper:
    """An ASGI middleware whose other attributes are the wrapped app's (e.g.
    ``dependency_overrides``, which ``tiled.client.Context.from_app`` reads)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def __getattr__(self, name: str) -> Any:
        return getattr(self.app, name)


class OneRequestAtATime(AppWrapper):
    """Handle one HTTP request at a time, and never wait for a client while doing so.

    tiled gives a DuckDB table storage a single connection (SQLAlchemy's ``StaticPool``) that
    every request shares; two requests using it at once (a RunEngine's raw writer and a
    ``LiveAnalysis`` worker, or two clients of ``bas serve``) interleave their transactions, and
    one fails with DuckDB's "No active transaction". PostgreSQL table storage needs no such
    wrapping.

    The lock covers only tiled's own work: the request body is read before the lock is taken,
    and the response is collected while it is held and sent after it is released. A client that
    stops reading (or sending) therefore holds up nobody but itself. A client that makes no
    progress for ``stall_timeout`` seconds, while its body is read or its response sent, is
    given up (408 while reading; the connection is closed while sending).

    Parameters
    ----------
    app : ASGI app
        tiled's app.
    stall_timeout : float
        Seconds without progress after which a client is given up.
    chunk_size : int
        A response body is sent in pieces of this many bytes, each within ``stall_timeout``.
    """

    def __init__(self, app: Any, *, stall_timeout: float = 60.0, chunk_size: int = 1 << 20) -> None:
        super().__init__(app)
        self.stall_timeout = stall_timeout
        self.chunk_size = chunk_size
        self._lock: asyncio.Lock | None = None  # made in the app's event loop, on first use

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"].startswith(UNLOCKED_ROUTES):
            await self.app(scope, receive, send)
            return
        replay = await self._read_body(receive, send)
        if replay is None:
            return
        if self._lock is None:
            self._lock = asyncio.Lock()
        messages: list[dict[str, Any]] = []

        async def collect(message: dict[str, Any]) -> None:
            messages.append(message)

        error: Exception | None = None
        async with self._lock:
            try:
                await self.app(scope, replay, collect)
            except Exception as raised:  # sent on below, after what the app answered
                error = raised
        await self._send_all(send, messages, scope)
        if error is not None:
            raise error

    async def _read_body(self, receive: Any, send: Any) -> Any:
        """A ``receive`` that replays the whole request body, or None if the client left or
        stalled (then answered 408)."""
        chunks: list[bytes] = []
        while True:
            try:
                message = await asyncio.wait_for(receive(), self.stall_timeout)
            except TimeoutError:
                await reply(
                    send, 408, f"no part of the request body came for {self.stall_timeout} s"
                )
                return None
            if message["type"] != "http.request":  # http.disconnect
                return None
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        body: list[dict[str, Any]] = [{"type": "http.request", "body": b"".join(chunks)}]

        async def replay() -> Any:
            if body:
                return body.pop()
            return await receive()  # waits for the client's disconnect, as uvicorn's does

        return replay

    async def _send_all(self, send: Any, messages: list[dict[str, Any]], scope: Any) -> None:
        for message in messages:
            if message["type"] == "http.response.body":
                pieces = _pieces(message, self.chunk_size)
            else:
                pieces = [message]
            for piece in pieces:
                try:
                    await asyncio.wait_for(send(piece), self.stall_timeout)
                except TimeoutError:
                    logger.warning(
                        "%s %s: the client read nothing for %s s; its response is abandoned",
                        scope.get("method"),
                        scope.get("path"),
                        self.stall_timeout,
                    )
                    return


def _pieces(message: dict[str, Any], size: int) -> list[dict[str, Any]]:
    """A body message cut into messages of at most ``size`` bytes (the last keeps
    ``more_body``)."""
    body = message.get("body", b"")
    if len(body) <= size:
        return [message]
    more = message.get("more_body", False)
    starts = range(0, len(body), size)
    return [
        {
            "type": "http.response.body",
            "body": body[start : start + size],
            "more_body": more or start + size < len(body),
        }
        for start in starts
    ]


async def reply(send: Any, status: int, detail: str) -> None:
    """Answer an HTTP request with ``{"detail": detail}``, as tiled answers errors."""
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
