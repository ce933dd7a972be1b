"""Light tiled clients for commands that read a few runs (``bas show``, ``search``, ``lineage``).

tiled picks a node's client class by its specs; for ``CatalogOfBlueskyRuns`` and ``BlueskyRun``
those are bluesky-tiled-plugins' classes, and importing any part of that package imports all of
it (its writer, validator, dask, xarray, numba): more time than a whole command otherwise
takes. These clients are tiled's own classes for every structure family, with one addition for
a catalog of runs: the lookup by partial uid that the commands take, as bluesky-tiled-plugins'
``CatalogOfBlueskyRuns`` does it on a SQL catalog (a ``Like`` on ``start.uid``, two results at
most). A run is then a plain tiled ``Container``: its streams and their metadata, no
``BlueskyRun`` methods. Python users get bluesky-tiled-plugins' classes (the default).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from tiled.client.container import Container

#: The shortest partial uid accepted (bluesky-tiled-plugins' rule).
MIN_PARTIAL_UID = 5


class RunCatalog(Container):
    """A ``CatalogOfBlueskyRuns`` read with tiled's ``Container``, plus lookup by partial uid."""

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str) and len(key) != 36:
            return self._by_partial_uid(key)
        return super().__getitem__(key)

    def _by_partial_uid(self, partial_uid: str) -> Any:
        from tiled.queries import Like

        from ..core._errors import AnalysisInputError, NotFoundError

        if len(partial_uid) < MIN_PARTIAL_UID:
            raise AnalysisInputError(
                f"Partial uid {partial_uid!r} is too short. It must include at least "
                f"{MIN_PARTIAL_UID} characters."
            )
        found = self.search(Like("start.uid", f"{partial_uid}%")).values().head(2)
        if len(found) > 1:
            raise AnalysisInputError(
                f"Partial uid {partial_uid} has multiple matches. Include more characters to "
                "get a unique match."
            )
        if not found:
            raise NotFoundError(f"No match for partial_uid {partial_uid}")
        return found[0]


def _run_catalog() -> type[RunCatalog]:
    return RunCatalog


def reading_clients() -> Any:
    """tiled's ``structure_clients`` for reading: its own class per structure family,
    :class:`RunCatalog` for a ``CatalogOfBlueskyRuns``, nothing from entry points."""
    from tiled.client.container import DEFAULT_STRUCTURE_CLIENT_DISPATCH
    from tiled.utils import OneShotCachedMap

    from ._catalog import CATALOG_SPEC

    Container.discover_clients_from_entrypoints()  # so that their names are known to leave out
    plugged = set(Container.STRUCTURE_CLIENTS_FROM_ENTRYPOINTS or ())
    numpy = DEFAULT_STRUCTURE_CLIENT_DISPATCH["numpy"]
    loaders: dict[str, Callable[[], Any]] = {
        name: functools.partial(numpy.__getitem__, name)
        for name in list(numpy)
        if name not in plugged
    }
    loaders[CATALOG_SPEC[0]] = _run_catalog
    return OneShotCachedMap(loaders)
