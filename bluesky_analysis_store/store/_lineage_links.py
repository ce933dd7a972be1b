"""The lineage in tiled's graph of links: one ``prov:wasDerivedFrom`` link per parent of a run.

tiled 0.2.20 keeps a graph of entities and links in the catalog database (``tiled/graph``,
read through GraphQL at ``/api/graphql``). The store's tree writes a run's edges there when the
run's container is created (:mod:`._tree_rules`): server-side, so a save costs no extra request,
in one more transaction after tiled's own.

* The run's entity is bound to its node (``node_id``: tiled's access control follows the node,
  and deleting the run deletes the entity and its outgoing links), type ``bas:AnalysisRun``,
  URI ``urn:bluesky-analysis-store:run/<uid>``.
* A parent gets an entity of type ``bas:Run`` with its URI and no node, unless it already has
  one (an analysis run saved before binds its own when created; a parent created after its
  child, as a replay may do, binds the entity then).
* Entity and link ids are UUID5s of the URIs (tiled's GraphQL makes UUID4s), so a child finds
  its parents' entities without a query and writing twice changes nothing.
* The predicate is the full IRI ``http://www.w3.org/ns/prov#wasDerivedFrom``, with the prefixes
  ``prov`` and ``bas`` registered, as tiled stores a CURIE it expands: the same triples as the
  PROV export's derivations (``exchange._prov.graph_links``).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from ..core._names import BAS_NAMESPACE, PROV_NAMESPACE

logger = logging.getLogger("bluesky_analysis_store.store")

WAS_DERIVED_FROM = PROV_NAMESPACE + "wasDerivedFrom"
#: The prefixes registered in tiled's ``namespaces`` table (GraphQL compacts with them).
PREFIXES = {"prov": PROV_NAMESPACE, "bas": BAS_NAMESPACE}


#: What every run's IRI starts with (the graph's and the PROV exports' alike).
RUN_IRI_PREFIX = f"{BAS_NAMESPACE}run/"


def run_iri(uid: str) -> str:
    """The IRI of a run: ``urn:bluesky-analysis-store:run/<uid>``."""
    return RUN_IRI_PREFIX + uid


def entity_id(uid: str) -> str:
    """The id of a run's entity in tiled's graph (a UUID5 of its IRI)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, run_iri(uid)))


def link_id(child: str, parent: str) -> str:
    """The id of the ``wasDerivedFrom`` link from ``child`` to ``parent``."""
    return str(
        uuid.uuid5(uuid.NAMESPACE_URL, f"{run_iri(child)} {WAS_DERIVED_FROM} {run_iri(parent)}")
    )


def _insert(dialect: str, table: Any) -> Any:
    """``INSERT ... ON CONFLICT DO NOTHING`` on either dialect."""
    if dialect == "sqlite":
        from sqlalchemy.dialects import sqlite

        return sqlite.insert(table)
    from sqlalchemy.dialects import postgresql

    return postgresql.insert(table)


async def write_lineage_links(context: Any, node_id: int, metadata: Mapping[str, Any]) -> None:
    """Write the run's entity, its parents' and one link per parent (one transaction).

    Parameters
    ----------
    context : tiled's catalog context
        Whose ``session()`` reaches the catalog database.
    node_id : int
        The run's node, just created.
    metadata : mapping
        The node's metadata (``start`` with ``uid``, ``parent_uids``, ``lineage_hash``...).
    """
    from sqlalchemy import update
    from tiled.graph.orm import entities, links, namespaces

    start = metadata.get("start") or {}
    uid = str(start["uid"])
    parents = [str(p) for p in dict.fromkeys(start.get("parent_uids") or [])]
    now = datetime.now(UTC)
    properties = {
        key: start[key]
        for key in ("lineage_hash", "analysis_name", "analysis_version")
        if start.get(key) is not None
    }
    run: dict[str, Any] = {
        "id": entity_id(uid),
        "node_id": node_id,
        "entity_type": "bas:AnalysisRun",
        "name": uid,
        "uri": run_iri(uid),
        "properties": properties,
        "created_at": now,
    }
    named: list[dict[str, Any]] = [
        {
            "id": entity_id(parent),
            "node_id": None,
            "entity_type": "bas:Run",
            "name": parent,
            "uri": run_iri(parent),
            "properties": {},
            "created_at": now,
        }
        for parent in parents
    ]
    edges = [
        {
            "id": link_id(uid, parent),
            "subject_id": entity_id(uid),
            "predicate": WAS_DERIVED_FROM,
            "object_id": entity_id(parent),
            "properties": {},
            "created_at": now,
        }
        for parent in parents
    ]
    prefixes = [{"prefix": p, "uri": u, "created_at": now} for p, u in PREFIXES.items()]
    async with context.session() as db:
        dialect = db.bind.dialect.name
        for table, rows in ((namespaces, prefixes), (entities, [run, *named]), (links, edges)):
            if rows:
                await db.execute(_insert(dialect, table).values(rows).on_conflict_do_nothing())
        # named as a parent before it was created (a replay's order): bind it now
        await db.execute(
            update(entities)
            .where(entities.c.id == run["id"], entities.c.node_id.is_(None))
            .values(node_id=node_id, entity_type=run["entity_type"], properties=properties)
        )
        await db.commit()


async def write_or_warn(context: Any, node_id: int, metadata: Mapping[str, Any]) -> None:
    """:func:`write_lineage_links`, logging instead of raising: the run is created already,
    and its lineage is in the lineage index whatever happens here."""
    try:
        await write_lineage_links(context, node_id, metadata)
    except Exception as error:
        logger.warning(
            "could not write the lineage links of node %s into tiled's graph: %s", node_id, error
        )


_LINKS_QUERY = """query($offset: Int!) {
  namespaces { prefix uri }
  links(predicate: "prov:wasDerivedFrom", limit: 100, offset: $offset) {
    predicate subject { uri } object { uri }
  }
}"""


def stored_links(runs: Any) -> set[tuple[str, str, str]]:
    """Every ``wasDerivedFrom`` link of the graph behind ``runs`` (a tiled client of the
    store's app) as ``(subject IRI, predicate IRI, object IRI)``, read through tiled's GraphQL
    (one request per 100 links) with the predicates expanded."""
    from tiled.graph.curie import expand_term

    found: set[tuple[str, str, str]] = set()
    offset = 0
    while True:
        response = runs.context.http_client.post(
            "/api/graphql", json={"query": _LINKS_QUERY, "variables": {"offset": offset}}
        )
        response.raise_for_status()
        data = response.json()["data"]
        prefixes = {n["prefix"]: n["uri"] for n in data["namespaces"]}
        for link in data["links"]:
            predicate = expand_term(link["predicate"], prefixes)
            found.add((link["subject"]["uri"], predicate, link["object"]["uri"]))
        if len(data["links"]) < 100:
            return found
        offset += 100
