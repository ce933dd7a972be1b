"""The one tiled app of a store's tree: the embedded store's (in process) and ``bas serve``'s.

Whichever way a store is reached, its app applies the same rules (:mod:`._tree_rules`):
provenance for every run of the analysis container, nothing outside the store registered or
served (:mod:`._containment`); it exports a run's documents (``run.documents()``); and, when
its tables are a DuckDB file, it handles one request at a time without waiting for any client
(:class:`._asgi.OneRequestAtATime`); it answers lineage questions from the lineage index in
one request (:mod:`._lineage_route`); it tells its clients whether it keeps streams
(:mod:`._streams_route`).
"""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator, Sequence
from typing import Any

from tiled.server.app import build_app  # sets its logger to INFO: import before adjusting it

from ..core._names import RUN_SPEC
from ._asgi import OneRequestAtATime
from ._containment import AssetRoutes

JSON_SEQ = "application/json-seq"


async def json_seq_exporter(
    mimetype: str, adapter: Any, metadata: Any, filter_for_access: Any
) -> AsyncIterator[str]:
    """bluesky-tiled-plugins' ``json_seq_exporter``, imported when a run is first exported
    (``bluesky_tiled_plugins`` costs seconds to import)."""
    from bluesky_tiled_plugins.exporters import json_seq_exporter as export

    async for chunk in export(mimetype, adapter, metadata, filter_for_access):
        yield chunk


def serialization_registry() -> Any:
    """tiled's serializers plus the BlueskyRun's JSON sequence of documents, which
    ``BlueskyRun.documents()`` (bluesky-tiled-plugins, databroker) asks for."""
    from tiled.media_type_registration import default_serialization_registry

    registry = copy.deepcopy(default_serialization_registry)
    registry.register(RUN_SPEC, JSON_SEQ, json_seq_exporter)
    return registry


def uses_duckdb(tree: Any) -> bool:
    """Are the tree's tables in a DuckDB file (whose one connection every request shares)?"""
    return any(
        str(getattr(storage, "uri", "")).startswith("duckdb:")
        for storage in tree.context.writable_storage.values()
    )


def build_store_app(
    tree: Any,
    *,
    authentication: Any = None,
    one_request_at_a_time: bool | None = None,
    routers: Sequence[Any] = (),
) -> Any:
    """The ASGI app serving a store's tiled ``tree``, with the store's rules.

    Parameters
    ----------
    tree : tiled catalog adapter
        From :func:`catalog_tree` or :func:`embedded_tree`; guarded in place.
    authentication : tiled.config.Authentication, optional
        tiled's authentication (``bas serve``: its single-user key); default: tiled's.
    one_request_at_a_time : bool, optional
        Serialize requests (see :class:`._asgi.OneRequestAtATime`); default: when the tables
        are a DuckDB file.
    routers : sequence of fastapi.APIRouter, optional
        More routes at the app's root, with tiled's dependencies (``bas serve``: the lineage
        page).
    """
    from ._lineage_route import lineage_router
    from ._streams_route import streams_router
    from ._tree_rules import guard_tree

    tree = guard_tree(tree)
    app = build_app(
        tree,
        authentication=authentication,
        serialization_registry=serialization_registry(),
        # the lineage index's answers, one request each; whether the server keeps streams
        include_routers=[lineage_router(), streams_router()],
    )
    for router in routers:  # at the root: tiled puts its include_routers under /api/v1
        app.include_router(router)
    fold_dependency_overrides(app)
    if one_request_at_a_time if one_request_at_a_time is not None else uses_duckdb(tree):
        app = OneRequestAtATime(app)
    return AssetRoutes(app, tree)


class _FoldedOverrides(dict[Any, Any]):
    """The overrides, still there to be read (``tiled.client.Context.from_app`` reads the
    settings from them) but false: FastAPI re-analyses every dependency of every request, with
    ``inspect.signature``, whenever an app's ``dependency_overrides`` is true."""

    def __bool__(self) -> bool:
        return False


def fold_dependency_overrides(app: Any) -> None:
    """Put ``app.dependency_overrides`` into its routes' dependencies once, instead of
    FastAPI resolving them again on every request (tiled overrides ``get_settings``: about
    17 ms of CPU per request, half of what a small request costs the server)."""
    overrides = dict(app.dependency_overrides)

    def fold(dependant: Any) -> None:
        for sub in dependant.dependencies:
            if sub.call in overrides:
                sub.call = overrides[sub.call]
            fold(sub)

    for route in app.routes:
        if getattr(route, "dependant", None) is not None:
            fold(route.dependant)
    app.dependency_overrides = _FoldedOverrides(overrides)
