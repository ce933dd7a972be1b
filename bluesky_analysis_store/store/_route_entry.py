"""What the store's own routes share: the container at the request's path, reached with tiled's
authentication, scopes (``read:metadata``) and access policy, as for a search."""

# No `from __future__ import annotations`: FastAPI reads these annotations at runtime.

from typing import Any

from fastapi import Depends, Request, Security
from tiled.server.authentication import (
    check_scopes,
    get_current_access_tags,
    get_current_principal,
    get_current_scopes,
    get_session_state,
)
from tiled.server.dependencies import get_entry, get_root_tree
from tiled.structures.core import StructureFamily


async def container_entry(
    request: Request,
    path: str,
    principal: Any = Depends(get_current_principal),  # noqa: B008
    root_tree: Any = Depends(get_root_tree),  # noqa: B008
    session_state: dict = Depends(get_session_state),  # noqa: B008
    authn_access_tags: Any = Depends(get_current_access_tags),  # noqa: B008
    authn_scopes: Any = Depends(get_current_scopes),  # noqa: B008
    _: Any = Security(check_scopes, scopes=["read:metadata"]),  # noqa: B008
) -> Any:
    """A FastAPI dependency: tiled's entry for the container at ``path`` (tiled's own errors
    for a missing node, a node that is not a container, or one the principal may not read)."""
    return await get_entry(
        path,
        ["read:metadata"],
        principal,
        authn_access_tags,
        authn_scopes,
        root_tree,
        session_state,
        request.state.metrics,
        {StructureFamily.container},
        getattr(request.app.state, "access_policy", None),
    )
