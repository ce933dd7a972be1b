"""ASGI wrapping for tiled apps whose table storage is a DuckDB file."""

from __future__ import annotations

import asyncio
from typing import Any


class OneRequestAtATime:
    """Handle one HTTP request at a time (an ASGI wrapper; other attributes are the app's).

    tiled gives a DuckDB table storage a single connection (SQLAlchemy's ``StaticPool``) that
    every request shares; two requests using it at once (a RunEngine's raw writer and a
    ``LiveAnalysis`` worker, or two clients of ``bas serve``) interleave their transactions, and
    one fails with DuckDB's "No active transaction". PostgreSQL table storage needs no such
    wrapping.
    """

    def __init__(self, app: Any) -> None:
        self.app = app
        self._lock: asyncio.Lock | None = None  # made in the app's event loop, on first use

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            await self.app(scope, receive, send)

    def __getattr__(self, name: str) -> Any:  # e.g. dependency_overrides, state
        return getattr(self.app, name)
