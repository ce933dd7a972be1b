"""The provenance graph of a run: ancestors and descendants, as text and as an SVG picture."""

from __future__ import annotations

import html
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..provenance._run_kind import is_analysis_run

NodeKind = Literal["analysis", "raw", "missing"]


@dataclass(frozen=True)
class LineageNode:
    """One run in the graph."""

    uid: str
    kind: NodeKind
    label: str


@dataclass(frozen=True)
class NodeLinks:
    """Where a node of the SVG picture leads: its own page and, if stored, its data."""

    page: str
    data: str | None = None


@dataclass
class LineageGraph:
    """Runs (nodes) and parent → child edges around one focus run."""

    focus: str
    nodes: dict[str, LineageNode] = field(default_factory=dict)
    edges: set[tuple[str, str]] = field(default_factory=set)

    def parents(self, uid: str) -> list[str]:
        return sorted(parent for parent, child in self.edges if child == uid)

    def children(self, uid: str) -> list[str]:
        return sorted(child for parent, child in self.edges if parent == uid)

    def ancestors(self) -> list[str]:
        return self._walk(self.parents)

    def descendants(self) -> list[str]:
        return self._walk(self.children)

    def _walk(self, step: Callable[[str], list[str]]) -> list[str]:
        found: list[str] = []
        frontier = [self.focus]
        while frontier:
            frontier = [n for uid in frontier for n in step(uid) if n not in found]
            found.extend(dict.fromkeys(frontier))
        return found

    def _line(self, uid: str) -> str:
        node = self.nodes[uid]
        return f"{uid[:8]}  {node.label}  [{node.kind}]"

    def _tree(self, uid: str, step: Callable[[str], list[str]], prefix: str = "") -> list[str]:
        lines = []
        branches = step(uid)
        for i, branch in enumerate(branches):
            last = i == len(branches) - 1
            lines.append(f"{prefix}{'└── ' if last else '├── '}{self._line(branch)}")
            lines.extend(self._tree(branch, step, prefix + ("    " if last else "│   ")))
        return lines

    def as_text(self) -> str:
        """A terminal tree: the focus run, what it was derived from, and what derives from it."""
        lines = [self._line(self.focus), "derived from:"]
        lines += self._tree(self.focus, self.parents, "  ") or ["  (nothing recorded)"]
        lines.append("derived into:")
        lines += self._tree(self.focus, self.children, "  ") or ["  (nothing yet)"]
        return "\n".join(lines)

    def _depths(self) -> dict[str, int]:
        depth = {self.focus: 0}
        for direction, step in ((-1, self.parents), (1, self.children)):
            frontier = [self.focus]
            while frontier:
                nxt = []
                for uid in frontier:
                    for other in step(uid):
                        if other not in depth:
                            depth[other] = depth[uid] + direction
                            nxt.append(other)
                frontier = nxt
        return depth

    def as_svg(self, links: Callable[[str], NodeLinks] | None = None) -> str:
        """An SVG picture: one column per generation, parents left, derived runs right.

        ``links(uid)``: where each node leads (the lineage page serves it so); the box links to
        ``page``, a "data" mark in its corner to ``data``. Without it, nothing is a link.
        """
        depth = self._depths()
        columns: dict[int, list[str]] = {}
        for uid in sorted(depth, key=lambda u: (depth[u], self.nodes[u].label, u)):
            columns.setdefault(depth[uid], []).append(uid)
        # Order each column by where its parents sit in the column before (fewer crossings).
        for d in sorted(columns)[1:]:
            before = {uid: i for i, uid in enumerate(columns[d - 1])} if d - 1 in columns else {}

            def rank(uid: str, before: dict[str, int] = before) -> float:
                placed = [before[p] for p in self.parents(uid) if p in before]
                return sum(placed) / len(placed) if placed else float("inf")

            columns[d].sort(key=rank)
        width, height, gap_x, gap_y = 220, 46, 70, 18
        first = min(columns)
        position = {
            uid: ((d - first) * (width + gap_x) + 10, i * (height + gap_y) + 10)
            for d, uids in columns.items()
            for i, uid in enumerate(uids)
        }
        total_w = (max(columns) - first + 1) * (width + gap_x)
        total_h = max(len(u) for u in columns.values()) * (height + gap_y) + 10
        colors = {"analysis": "#dbeafe", "raw": "#dcfce7", "missing": "#fee2e2"}
        parts = [
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{total_w}" height="{total_h}" '
            'font-family="sans-serif" font-size="12">',
            '<defs><marker id="arrow" markerWidth="8" markerHeight="8" refX="8" refY="4" '
            'orient="auto"><path d="M0,0 L8,4 L0,8 z" fill="#555"/></marker></defs>',
        ]
        for parent, child in sorted(self.edges):
            (x1, y1), (x2, y2) = position[parent], position[child]
            parts.append(
                f'<line x1="{x1 + width}" y1="{y1 + height / 2}" x2="{x2}" y2="{y2 + height / 2}" '
                'stroke="#555" marker-end="url(#arrow)"/>'
            )
        for uid, (x, y) in position.items():
            node = self.nodes[uid]
            stroke = 3 if uid == self.focus else 1
            box = [
                f'<rect x="{x}" y="{y}" width="{width}" height="{height}" rx="6" '
                f'fill="{colors[node.kind]}" stroke="#333" stroke-width="{stroke}"/>',
                f'<text x="{x + 8}" y="{y + 18}">{html.escape(node.label[:32])}</text>',
                f'<text x="{x + 8}" y="{y + 36}" fill="#555">{node.kind} {uid[:8]}</text>',
            ]
            to = links(uid) if links is not None else None
            if to is not None:  # a link may not hold another: the data mark sits beside
                box = [f'<a class="node" href="{html.escape(to.page)}">', *box, "</a>"]
                if to.data is not None:
                    box += [
                        f'<a class="data" href="{html.escape(to.data)}">'
                        f'<text x="{x + width - 8}" y="{y + 36}" text-anchor="end" '
                        'fill="#1d4ed8" text-decoration="underline">data</text></a>'
                    ]
            parts += [f"<g><title>{html.escape(uid)}</title>", *box, "</g>"]
        parts.append("</svg>")
        return "\n".join(parts)

    def write_svg(self, path: str | Path) -> Path:
        """Write :meth:`as_svg` to ``path`` and return it."""
        path = Path(path)
        path.write_text(self.as_svg())
        return path


def _label(start: Mapping[str, Any]) -> tuple[NodeKind, str]:
    if is_analysis_run(start):
        name = f"{start.get('analysis_name') or ''} {start.get('analysis_version') or ''}"
        return "analysis", name.strip()
    return "raw", str(start.get("plan_name", "run"))


def build_lineage_graph(
    start: Mapping[str, Any],
    find_starts: Callable[[list[str]], Mapping[str, Mapping[str, Any]]],
    find_children: Callable[[str], Mapping[str, Mapping[str, Any]]],
) -> LineageGraph:
    """Walk parents (``parent_uids``) up and children down from the run whose start document is
    ``start``.

    ``find_starts(uids)`` gives the start documents of a generation of ancestors at once (a
    uid it leaves out is a missing run); ``find_children(uid)`` the runs derived from ``uid``
    with their start documents. So the walk asks once per generation up and once per run down.
    """
    uid = str(start["uid"])
    graph = LineageGraph(focus=uid)
    starts: dict[str, Mapping[str, Any] | None] = {}

    def visit(run_uid: str, run_start: Mapping[str, Any] | None) -> None:
        starts[run_uid] = run_start
        kind, label = _label(run_start) if run_start is not None else ("missing", "not found")
        graph.nodes.setdefault(run_uid, LineageNode(run_uid, kind, label))

    visit(uid, start)
    frontier = [uid]
    while frontier:  # ancestors, a generation at a time
        nxt: list[str] = []
        for child in frontier:
            for parent in (starts[child] or {}).get("parent_uids", []):
                graph.edges.add((parent, child))
                if parent not in graph.nodes and parent not in nxt:
                    nxt.append(parent)
        found = find_starts(nxt) if nxt else {}
        for parent in nxt:
            visit(parent, found.get(parent))
        frontier = nxt
    frontier = [uid]
    while frontier:  # descendants
        nxt = []
        for parent in frontier:
            for child, child_start in find_children(parent).items():
                graph.edges.add((parent, child))
                if child not in graph.nodes:
                    visit(child, child_start)
                    nxt.append(child)
        frontier = nxt
    return graph


def lineage_graph_from_edges(
    uid: str,
    up: list[tuple[str, str]],
    down: list[tuple[str, str]],
    starts: Mapping[str, Mapping[str, Any]],
    find_start: Callable[[str], Mapping[str, Any] | None],
) -> LineageGraph:
    """The graph :func:`build_lineage_graph` walks, from the lineage index's answer: the edges
    above ``uid`` (``up``) and below it (``down``), and the start documents it had; the runs it
    did not have (raw runs) are looked up with ``find_start``."""
    graph = LineageGraph(focus=uid)
    graph.edges.update(tuple(edge) for edge in up)  # type: ignore[misc]
    graph.edges.update(tuple(edge) for edge in down)  # type: ignore[misc]
    for run_uid in [uid, *sorted({u for edge in graph.edges for u in edge} - {uid})]:
        start = starts[run_uid] if run_uid in starts else find_start(run_uid)
        kind, label = _label(start) if start is not None else ("missing", "not found")
        graph.nodes[run_uid] = LineageNode(run_uid, kind, label)
    return graph
