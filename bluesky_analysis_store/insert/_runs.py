"""Runs looked up in a tiled container by their exact uid.

bluesky-tiled-plugins' ``CatalogOfBlueskyRuns`` answers ``runs[uid]`` and ``uid in runs`` for a
uid it does not hold with a search for it as a partial uid (``LIKE 'uid%'`` over every run: a
second request and a scan that grows with the catalog). Asking whether *this* run is stored
needs one exact lookup: tiled's own ``Container.__getitem__``.
"""

from __future__ import annotations

from typing import Any


def stored_run(runs: Any, uid: str) -> Any | None:
    """The run stored under exactly ``uid`` in the tiled container ``runs`` (one request), or
    None."""
    from tiled.client.container import Container

    try:
        return Container.__getitem__(runs, uid)
    except KeyError:
        return None
