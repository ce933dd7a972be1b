"""The lineage page of a run: ``GET /lineage/{uid}`` on ``bas serve`` (and an embedded store's
local server), an HTML page behind the same keys as the API (decision record 0019).

It draws the run's ancestors and descendants with the store's SVG picture
(:meth:`..store._lineage_graph.LineageGraph.as_svg`, each node linking to its own page and to
tiled's web UI for its data), shows the run's provenance as tables (read with the provenance
model, :class:`..provenance._provenance.Provenance`) and the failure records of its parents
(:func:`..store._failures.failure_record`). Everything on it comes from metadata users wrote:
the template is rendered by jinja2 with autoescape on, and the SVG escapes what it draws.
"""

# No `from __future__ import annotations`: FastAPI reads the route's annotations at runtime.

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: The page's path, followed by a run's full uid.
LINEAGE_PAGE = "/lineage/"
TEMPLATES = Path(__file__).parent / "templates"
#: More catalog containers than this at the root are not searched for raw runs.
MAX_ROOT_CONTAINERS = 100


@dataclass
class RunPage:
    """What the template shows of one run."""

    uid: str
    kind: str  # the graph's node kind: analysis, raw, missing
    container: str | None  # where it is stored (tiled path of its catalog), if found
    start: dict[str, Any] = field(default_factory=dict)
    stop: dict[str, Any] = field(default_factory=dict)
    provenance: Any = None  # the Provenance model, for an analysis run
    provenance_problem: str | None = None
    parameters: list[tuple[str, str]] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)


#: The start of a uid (bluesky-tiled-plugins' partial uids have at least 5 characters).
PARTIAL_UID = re.compile(r"^[0-9a-fA-F-]{5,35}$")


def _uid_pattern() -> "re.Pattern[str]":
    from ..provenance._provenance import UID_PATTERN

    return re.compile(UID_PATTERN)


async def runs_starting_with(entry: Any, partial: str, limit: int = 10) -> list[str]:
    """Uids of the runs of ``entry`` that start with ``partial`` (a :data:`PARTIAL_UID`): the
    query bluesky-tiled-plugins sends for a partial uid to an SQL catalog."""
    from tiled.queries import Like

    return list(await entry.search(Like("start.uid", f"{partial}%")).keys_range(0, limit))


def shown(value: Any) -> str:
    """A parameter's value as text: strings as they are, anything else as JSON."""
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


class Links:
    """The page's links, relative to the server's root: a run's page and its data (tiled's web
    UI when tiled has it packaged, else the node's metadata in tiled's API)."""

    def __init__(self, root: str, containers: dict[str, str]) -> None:
        from tiled.utils import SHARE_TILED_PATH

        self.root = root
        self.containers = containers
        self.has_ui = bool(SHARE_TILED_PATH)

    def page(self, uid: str) -> str:
        return f"{self.root}{LINEAGE_PAGE}{uid}"

    def ui(self, uid: str) -> str | None:
        where = self.containers.get(uid)
        return f"{self.root}/ui/browse/{where}/{uid}/" if where and self.has_ui else None

    def api(self, uid: str) -> str | None:
        where = self.containers.get(uid)
        return f"{self.root}/api/v1/metadata/{where}/{uid}" if where else None

    def data(self, uid: str) -> str | None:
        return self.ui(uid) or self.api(uid)

    def node(self, uid: str) -> Any:
        from ..store._lineage_graph import NodeLinks

        return NodeLinks(self.page(uid), self.data(uid))


async def _raw_starts(
    root_tree: Any, runs_name: str, uids: list[str]
) -> dict[str, tuple[str, dict[str, Any]]]:
    """``{uid: (container, start)}`` of those ``uids`` found in the other catalogs of bluesky
    runs that the server holds (a raw catalog beside the analysis container)."""
    from tiled.server.core import NoEntry

    from ..store._catalog import CATALOG_SPEC

    if not uids:
        return {}
    found: dict[str, tuple[str, dict[str, Any]]] = {}
    for name in await root_tree.keys_range(0, MAX_ROOT_CONTAINERS):
        if name == runs_name:
            continue
        container = await root_tree.lookup_adapter([name])
        if not any(spec.name == CATALOG_SPEC[0] for spec in getattr(container, "specs", [])):
            continue
        for uid in uids:
            if uid in found:
                continue
            try:
                run = await container.lookup_adapter([uid])
            except NoEntry:
                continue
            start = (run.metadata() or {}).get("start")
            if isinstance(start, dict):
                found[uid] = (name, start)
    return found


async def _failures_of(entry: Any, parents: list[str]) -> list[dict[str, Any]]:
    """The failure records derived from ``parents`` (each once), from the lineage index: the
    children it lists when asked for incomplete runs too, less the complete ones."""
    from tiled.server.core import NoEntry

    from ..store._failures import failure_record, is_failure
    from ..store._lineage_route import ask_index

    records: dict[str, dict[str, Any]] = {}
    for parent in parents:
        every = await ask_index(entry, "descendants", {"uid": parent, "include_incomplete": True})
        complete = await ask_index(entry, "descendants", {"uid": parent})
        done = {child for _, child in (complete or {}).get("edges", [])}
        for _, child in (every or {}).get("edges", []):
            if child in done or child in records:
                continue
            try:
                metadata = (await entry.lookup_adapter([child])).metadata()
            except NoEntry:  # deleted since the index answered
                continue
            if is_failure(metadata):
                records[child] = failure_record(child, metadata)
    return list(records.values())


async def page_context(entry: Any, root_tree: Any, uid: str, root: str) -> dict[str, Any] | None:
    """What the template needs to show run ``uid`` of the analysis container ``entry``, or None
    when the store knows no such run (neither stored nor named as a parent)."""
    from tiled.server.core import NoEntry

    from ..core._errors import AnalysisStoreError
    from ..provenance._provenance import Provenance, provenance_problem
    from ..store._lineage_graph import lineage_graph_from_edges
    from ..store._lineage_route import ask_index

    runs_name = entry.node.key
    answer = await ask_index(entry, "lineage", {"uid": uid})
    if answer is None:
        raise AnalysisStoreError("the catalog has no lineage index (bas fsck --repair)")
    starts: dict[str, Any] = answer["starts"]
    named = {u for edge in answer["up"] + answer["down"] for u in edge} | {uid}
    raw = await _raw_starts(root_tree, runs_name, sorted(named - set(starts)))
    if uid not in starts and uid not in raw and not answer["up"] + answer["down"]:
        return None
    containers = {u: runs_name for u in starts} | {u: where for u, (where, _) in raw.items()}
    graph = lineage_graph_from_edges(
        uid,
        answer["up"],
        answer["down"],
        starts,
        lambda other: raw[other][1] if other in raw else None,
    )
    links = Links(root, containers)
    run = RunPage(uid, graph.nodes[uid].kind, containers.get(uid))
    if uid in starts:
        try:
            metadata = (await entry.lookup_adapter([uid])).metadata()
        except NoEntry:  # deleted since the index answered
            return None
        run.start, run.stop = dict(metadata.get("start") or {}), dict(metadata.get("stop") or {})
        run.provenance_problem = provenance_problem(metadata)
        if run.provenance_problem is None:
            run.provenance = Provenance.model_validate(run.start["provenance"])
            run.parameters = [
                (name, shown(value)) for name, value in sorted(run.provenance.parameters.items())
            ]
    elif uid in raw:
        run.start = dict(raw[uid][1])
    run.failures = await _failures_of(entry, graph.parents(uid))
    return {
        "run": run,
        "graph": graph,
        "svg": graph.as_svg(links.node),
        "links": links,
        "ancestors": graph.ancestors(),
        "descendants": graph.descendants(),
    }


def templates() -> Any:
    """The page's jinja2 environment: autoescape on for every template (HTML only)."""
    import jinja2

    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )


def lineage_page_router() -> Any:
    """The page's router, added at the root of the store's app by ``bas serve``
    (:func:`._server.build_server_app`)."""
    from fastapi import APIRouter, Depends, HTTPException, Request, Security
    from fastapi.responses import HTMLResponse, RedirectResponse
    from markupsafe import Markup
    from tiled.server.authentication import (
        check_scopes,
        get_current_access_tags,
        get_current_principal,
        get_current_scopes,
        get_session_state,
    )
    from tiled.server.dependencies import get_root_tree

    from ..core._errors import AnalysisStoreError
    from ..store._catalog import RUNS_CONTAINER
    from ..store._route_entry import container_entry

    environment = templates()
    page = environment.get_template("lineage.html")
    uid_pattern = _uid_pattern()
    router = APIRouter()

    @router.get(LINEAGE_PAGE + "{uid}", response_class=HTMLResponse)
    async def lineage_page(
        request: Request,
        uid: str,
        principal: Any = Depends(get_current_principal),  # noqa: B008
        root_tree: Any = Depends(get_root_tree),  # noqa: B008
        session_state: dict = Depends(get_session_state),  # noqa: B008
        authn_access_tags: Any = Depends(get_current_access_tags),  # noqa: B008
        authn_scopes: Any = Depends(get_current_scopes),  # noqa: B008
        _: Any = Security(check_scopes, scopes=["read:metadata"]),  # noqa: B008
    ) -> Any:
        """A run's lineage page (HTML): its graph, provenance and its parents' failures; a
        partial uid redirects to the page of the one analysis run whose uid starts so."""
        root = request.scope.get("root_path", "")
        context, candidates = None, []
        full = uid_pattern.match(uid)
        if full or PARTIAL_UID.match(uid):  # anything else is no run (nor a path)
            entry = await container_entry(
                request,
                RUNS_CONTAINER,
                principal,
                root_tree,
                session_state,
                authn_access_tags,
                authn_scopes,
            )
            if full:
                try:
                    context = await page_context(entry, root_tree, uid, root)
                except AnalysisStoreError as error:  # no lineage index to ask
                    raise HTTPException(409, str(error)) from None
            else:  # the page of the one analysis run that starts so
                candidates = await runs_starting_with(entry, uid)
                if len(candidates) == 1:
                    return RedirectResponse(f"{root}{LINEAGE_PAGE}{candidates[0]}", 307)
        if context is None:
            html = page.render(found=False, uid=uid, root=root, candidates=candidates)
            return HTMLResponse(html, status_code=404)
        context["svg"] = Markup(context["svg"])  # built by as_svg, which escapes what it draws
        return HTMLResponse(page.render(found=True, root=root, **context))

    return router
