"""The store's tiled tree with its rules applied where tiled writes and reads, on every route.

tiled's catalog adapters are subclassed, and the tree hands out the subclasses on every lookup
(tiled's routes walk the tree with ``lookup_adapter``), so the rules hold for every route and
every client, in process and served:

* **Provenance.** A direct child of the analysis container (``/analysis/<uid>``) must be a
  ``BlueskyRun`` container (any version) whose start document carries valid provenance, when
  it is created and whenever its metadata or specs are replaced: HTTP 400 otherwise. A spec
  validator alone cannot say this (tiled runs validators only for the specs a node names, and
  does not tell them where the node is), and the rule must not reach other containers: a raw
  catalog in the same tree (``raw``) holds BlueskyRuns without provenance, and a run's own
  streams are no runs.
* **Lineage links.** A run created there gets its ``prov:wasDerivedFrom`` links in tiled's graph
  (:mod:`._lineage_links`).
* **Containment** (see :mod:`._containment`): assets given when a node is registered or a data
  source is replaced must lie inside the store (HTTP 400), and every asset tiled opens to read
  is checked again, resolved, at that moment (HTTP 403).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..core._errors import InputTypeError
from ..core._names import RUN_SPEC
from ..provenance._provenance import provenance_problem
from ._catalog import RUNS_CONTAINER
from ._containment import StoreStorage, data_sources_refusal

#: tiled's id of the root node: top-level containers are its children.
ROOT_ID = 0


def run_node_problem(
    structure_family: Any, specs: Any, metadata: Any, data_sources: Any = None
) -> str | None:
    """Why a node may not be (or become) a direct child of the analysis container, or None.

    The message of a provenance problem reads as tiled's own spec validation errors do.
    """
    names = sorted({str(_spec_name(s)) for s in specs or []})
    family = str(getattr(structure_family, "value", structure_family))
    if family != "container" or RUN_SPEC not in names or data_sources:
        return (
            f"only {RUN_SPEC} containers with valid provenance may be children of the analysis "
            f"container (got a {family!r} node with specs {names}"
            f"{' and data sources' if data_sources else ''}); raw runs belong in a raw catalog, "
            f"and the {RUN_SPEC} spec of a run cannot be removed (delete the run instead)"
        )
    problem = provenance_problem(metadata)
    if problem is not None:
        return f"failed validation for the {RUN_SPEC} spec:\n{problem}"
    return None


def _spec_name(spec: Any) -> Any:
    """A spec's name, whether it is tiled's ``Spec`` or its JSON form."""
    return spec.get("name") if isinstance(spec, Mapping) else getattr(spec, "name", None)


def _http_error(status: int, detail: str) -> Exception:
    from fastapi import HTTPException

    return HTTPException(status_code=status, detail=detail)


class _Rules:
    """Mixin on tiled's catalog adapters: the store's rules (see the module docstring)."""

    context: Any
    node: Any

    async def lookup_adapter(self, segments: list[str]) -> Any:
        return guarded(await super().lookup_adapter(segments))  # type: ignore[misc]

    async def create_node(
        self,
        structure_family: Any,
        metadata: Any,
        key: Any = None,
        specs: Any = None,
        data_sources: Any = None,
        access_tags: Any = None,
    ) -> Any:
        refusal = data_sources_refusal(StoreStorage.of(self.context), data_sources)
        if refusal is not None:
            raise _http_error(400, refusal)
        is_run = self.node.key == RUNS_CONTAINER and self.node.parent == ROOT_ID
        if is_run:
            problem = run_node_problem(structure_family, specs, metadata, data_sources)
            if problem is not None:
                raise _http_error(400, problem)
        created = await super().create_node(  # type: ignore[misc]
            structure_family,
            metadata,
            key=key,
            specs=specs,
            data_sources=data_sources,
            access_tags=access_tags,
        )
        if is_run:  # its lineage into tiled's graph of links: no request, one transaction
            from ._lineage_links import write_or_warn

            await write_or_warn(self.context, created.node.id, metadata)
        return created

    async def put_data_source(self, data_source: Any, patch: Any) -> Any:
        refusal = data_sources_refusal(StoreStorage.of(self.context), [data_source])
        if refusal is not None:
            raise _http_error(400, refusal)
        return await super().put_data_source(data_source, patch)  # type: ignore[misc]

    async def replace_metadata(
        self, metadata: Any = None, specs: Any = None, access_tags: Any = None, **kwargs: Any
    ) -> Any:
        if await self._is_run():
            problem = run_node_problem(
                self.node.structure_family,
                self.node.specs if specs is None else specs,
                self.node.metadata_ if metadata is None else metadata,
            )
            if problem is not None:
                raise _http_error(400, problem)
        return await super().replace_metadata(  # type: ignore[misc]
            metadata=metadata, specs=specs, access_tags=access_tags, **kwargs
        )

    async def _is_run(self) -> bool:
        """Is this node a direct child of the analysis container? (one small query)"""
        if self.node.parent in (None, ROOT_ID):
            return False
        from sqlalchemy import select
        from tiled.catalog import orm

        statement = select(orm.Node.key, orm.Node.parent).where(orm.Node.id == self.node.parent)
        async with self.context.session() as db:
            row = (await db.execute(statement)).first()
        return row is not None and tuple(row) == (RUNS_CONTAINER, ROOT_ID)

    def _ensure_uri_within_readable_storage(self, data_uri: str) -> None:
        # tiled calls this for every asset it builds a reading adapter from (its own check
        # uses commonpath, without resolving)
        refusal = StoreStorage.of(self.context).refusal(data_uri)
        if refusal is not None:
            raise _http_error(403, f"refusing to read {refusal}")


def _guarded_classes() -> dict[type, type]:
    from tiled.catalog.adapter import STRUCTURES

    return {
        cls: type(f"Guarded{cls.__name__}", (_Rules, cls), {}) for cls in set(STRUCTURES.values())
    }


_GUARDED: dict[type, type] = {}


def guarded(adapter: Any) -> Any:
    """``adapter`` made its guarded subclass, if it is one of tiled's catalog adapters (adapters
    inside a file, reached through a catalog node, are returned unchanged).

    The class is swapped in place: the subclasses add behaviour and no state, so the adapter
    keeps everything tiled gave it (conditions, queries, sorting, depth) at no cost.
    """
    if not _GUARDED:
        _GUARDED.update(_guarded_classes())
    cls = _GUARDED.get(type(adapter))
    if cls is not None:
        adapter.__class__ = cls
    return adapter


def guard_tree(tree: Any) -> Any:
    """The root adapter of a store's ``tree`` (from ``tiled.catalog.from_uri``, not mounted
    below its root), guarded in place."""
    if not isinstance(guarded(tree), _Rules):
        raise InputTypeError(f"not a tiled catalog adapter: {tree!r}")
    return tree
