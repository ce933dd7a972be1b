"""Does the store's server keep streams? Its app says so in one request, asked once per store.

TiledWriter ends every run by declaring the end of a stream of writes on each node it made
(``DELETE /api/v1/stream/close/...``: four requests for a small run). In tiled that tells the
live subscribers of a streaming cache (websockets) and webhooks; a catalog with neither does
nothing with it but look the node up. The store's app answers
``GET /api/v1/bas/streams/{path}`` with ``{"streams": bool}`` for the container at ``path``, so
that the store's sink skips those requests where nobody listens (:func:`server_streams`). A
server that is not the store's app (no route) is taken to keep streams: nothing is skipped.
"""

# No `from __future__ import annotations`: FastAPI reads these annotations at runtime.

from typing import Any

#: under tiled's ``/api/v1/``
ROUTE = "bas/streams"


def keeps_streams(context: Any) -> bool:
    """Whether a tiled catalog's context tells anyone that a stream closed (a streaming cache
    or webhooks: what tiled's ``close_stream`` serves); anything unknown counts as yes."""
    if context is None:
        return True
    return (
        getattr(context, "streaming_cache", True) is not None
        or getattr(context, "webhook_dispatcher", True) is not None
        or bool(getattr(context, "cache_config", None))
        or bool(getattr(context, "webhook_secret_keys", None))
    )


def streams_router() -> Any:
    """The router (a FastAPI ``APIRouter``) :func:`._app.build_store_app` adds to tiled's app.

    FastAPI and tiled's server modules are imported here, not with the module: a client's
    insert pipeline imports it for :func:`server_streams` alone (0.6 s of imports saved).
    """
    from fastapi import APIRouter, Depends, HTTPException

    from ._route_entry import container_entry

    router = APIRouter()

    @router.get(f"/{ROUTE}/{{path:path}}")
    async def streams(entry: Any = Depends(container_entry)) -> dict:  # noqa: B008
        if entry is None:  # pragma: no cover - get_entry raises for a missing node
            raise HTTPException(404, "no such container")
        return {"streams": keeps_streams(getattr(entry, "context", None))}

    return router


def server_streams(runs: Any) -> bool | None:
    """Whether the server of container ``runs`` keeps streams (one request): False only if its
    app says so; True for a server without the route (not the store's app) or any refusal;
    None if it could not be asked (unreachable: ask again later)."""
    context = getattr(runs, "context", None)
    if context is None or not hasattr(context, "http_client"):
        return True
    url = f"{context.api_uri}{ROUTE}/{'/'.join(p for p in runs.path_parts if p)}"
    try:
        response = context.http_client.get(url)
    except Exception:  # unreachable (the spool takes over): TiledWriter's default this time
        return None
    if response.status_code != 200:
        return True
    try:
        answer = response.json()
    except ValueError:  # not the store's app after all
        return True
    return not (isinstance(answer, dict) and answer.get("streams") is False)
