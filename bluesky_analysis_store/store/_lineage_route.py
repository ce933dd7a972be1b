"""The store app's one lineage route: a whole lineage answer in one request.

``GET /api/v1/bas/lineage/{path}?ask=...&args={...}`` (``args`` as JSON) answers
:func:`._lineage_index.answer` about the container at ``path`` from the catalog database, with
tiled's authentication, scopes (``read:metadata``) and access policy applied to the container
as for a search. HTTP 409 when the catalog has no lineage index (the client then searches by
scan). tiled's paged search listing would take a request per page (seconds for a subtree of
1,000 runs); this takes one. A GET, so ``bas serve``'s read-only key may ask too.
"""

# No `from __future__ import annotations`: FastAPI reads these annotations at runtime.

from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query

from ._lineage_index import QUESTIONS
from ._lineage_reader import ROUTE
from ._route_entry import container_entry


def lineage_router() -> APIRouter:
    """The router :func:`._app.build_store_app` adds to tiled's app."""
    router = APIRouter()

    @router.get(f"/{ROUTE}/{{path:path}}")
    async def lineage(
        ask: str = Query(...),
        args: str = Query("{}"),
        entry: Any = Depends(container_entry),  # noqa: B008
    ) -> dict:
        import json

        from ._lineage_index import HEALTH

        try:
            arguments = json.loads(args)
        except ValueError:
            arguments = None
        if ask not in (*QUESTIONS, HEALTH) or not isinstance(arguments, dict):
            raise HTTPException(400, f"ask one of {(*QUESTIONS, HEALTH)}, with args a JSON object")
        engine = getattr(getattr(entry, "context", None), "engine", None)
        if engine is None or getattr(entry, "node", None) is None:  # not a catalog container
            raise HTTPException(409, "no lineage index for this container")
        from ..core._errors import AnalysisInputError

        try:
            result = await ask_index(entry, ask, arguments)
        except AnalysisInputError as error:  # a question without its arguments
            raise HTTPException(400, str(error)) from None
        if result is None:
            raise HTTPException(409, "the catalog has no lineage index (bas fsck --repair)")
        return result

    return router


async def ask_index(entry: Any, ask: str, arguments: dict) -> dict | None:
    """The lineage index's answer (:func:`._lineage_index.answer`, or its ``health``) about the
    catalog container ``entry`` (tiled's adapter), or None: no index there (not a catalog
    container, or the index is not installed). Shared by the route and the lineage page."""
    from ._lineage_index import HEALTH, answer, health, installed, sync_execute

    engine = getattr(getattr(entry, "context", None), "engine", None)
    node = getattr(entry, "node", None)
    if engine is None or node is None:
        return None
    dialect = engine.dialect.name

    def work(connection: Any) -> dict | None:
        execute = sync_execute(connection)
        if ask == HEALTH:  # the index itself, installed or not
            return health(execute, dialect)
        if not installed(execute, dialect):
            return None
        return answer(execute, dialect, node.id, ask, arguments)

    async with engine.connect() as connection:
        result: dict | None = await connection.run_sync(work)
    return result
