"""The lineage index: parent → child edges of the catalog's runs, kept by the database itself.

A table ``bas_lineage_edges`` beside tiled's ``nodes`` in the catalog database holds one row per
entry of a node's ``start.parent_uids``, and ``bas_lineage_hashes`` one row per node whose start
has a ``lineage_hash``. Triggers on ``nodes`` (insert, update, delete; SQLite and PostgreSQL)
keep both exact in the same transaction as the change, whoever writes: the embedded store,
``bas serve``, a replay, a foreign TiledWriter, a plain ``tiled serve`` on the same database.
The lineage queries read them with indexed lookups and ``WITH RECURSIVE``, so they cost what
the answer costs, not what the catalog holds (decision record 0014).

tiled's own SQLite migrations rebuild ``nodes`` (``batch_alter_table``), which drops every
trigger on it: :func:`ensure` (run on each writable open) finds them missing and reinstalls
them, with an idempotent backfill; ``bas fsck`` checks and rebuilds (:func:`check`,
:func:`rebuild`). A read-only open never writes: without the index the queries fall back to
tiled's ``Contains`` scan.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from ..core._errors import AnalysisInputError

logger = logging.getLogger("bluesky_analysis_store.store")

Dialect = Literal["sqlite", "postgresql"]
#: ``execute(sql, params)``: the rows a statement returns (``:name`` parameters).
Execute = Callable[[str, Mapping[str, Any] | None], list[tuple[Any, ...]]]
T = TypeVar("T")

TABLE = "bas_lineage_edges"
HASHES = "bas_lineage_hashes"
#: The triggers of this version of the index (a new version gets new names: the open-time
#: check sees them missing and installs them, dropping the older ones, with a rebuild).
SQLITE_TRIGGERS = ("bas_lineage_v2_ai", "bas_lineage_v2_au", "bas_lineage_v2_ad")
PG_TRIGGER = "bas_lineage_v2_sync"
PG_FUNCTION = "bas_lineage_v2_sync"
#: Version 1 kept the edges only.
_SQLITE_OLD_TRIGGERS = ("bas_lineage_v1_ai", "bas_lineage_v1_au", "bas_lineage_v1_ad")
_PG_OLD = "bas_lineage_v1_sync"

_COLUMNS = "child_id, container_id, child_uid, parent_uid"
# No foreign key to nodes: tiled's SQLite migrations copy ``nodes`` into a new table, which
# must not touch this one (the triggers keep deletes exact on both dialects).
_TABLE_DDL = f"""CREATE TABLE IF NOT EXISTS {TABLE} (
  child_id INTEGER NOT NULL,
  container_id INTEGER,
  child_uid TEXT NOT NULL,
  parent_uid TEXT NOT NULL,
  PRIMARY KEY (child_id, parent_uid))"""
_HASH_COLUMNS = "child_id, container_id, child_uid, lineage_hash"
_HASHES_DDL = f"""CREATE TABLE IF NOT EXISTS {HASHES} (
  child_id INTEGER NOT NULL PRIMARY KEY,
  container_id INTEGER,
  child_uid TEXT NOT NULL,
  lineage_hash TEXT NOT NULL)"""
_INDEX_DDL = (
    f"CREATE INDEX IF NOT EXISTS ix_bas_lineage_parent ON {TABLE}"
    "(parent_uid, container_id, child_id)",
    f"CREATE INDEX IF NOT EXISTS ix_bas_lineage_child_uid ON {TABLE}(child_uid, container_id)",
    f"CREATE INDEX IF NOT EXISTS ix_bas_lineage_hash ON {HASHES}"
    "(lineage_hash, container_id, child_id)",
)

_SQLITE_EDGES_OF_NEW = f"""INSERT OR IGNORE INTO {TABLE}({_COLUMNS})
  SELECT NEW.id, NEW.parent, NEW.key, value FROM json_each(NEW.metadata, '$.start.parent_uids')
  WHERE type = 'text' AND json_type(NEW.metadata, '$.start.parent_uids') = 'array'"""
_SQLITE_HASH_OF_NEW = f"""INSERT OR IGNORE INTO {HASHES}({_HASH_COLUMNS})
  SELECT NEW.id, NEW.parent, NEW.key, json_extract(NEW.metadata, '$.start.lineage_hash')
  WHERE json_type(NEW.metadata, '$.start.lineage_hash') = 'text'"""
_SQLITE_DELETE_OLD = (
    f"DELETE FROM {TABLE} WHERE child_id = OLD.id; DELETE FROM {HASHES} WHERE child_id = OLD.id"
)
_SQLITE_TRIGGERS_DDL = (
    *(f"DROP TRIGGER IF EXISTS {name}" for name in _SQLITE_OLD_TRIGGERS),
    f"""CREATE TRIGGER IF NOT EXISTS {SQLITE_TRIGGERS[0]} AFTER INSERT ON nodes
BEGIN {_SQLITE_EDGES_OF_NEW}; {_SQLITE_HASH_OF_NEW}; END""",
    f"""CREATE TRIGGER IF NOT EXISTS {SQLITE_TRIGGERS[1]} AFTER UPDATE OF metadata, key, parent
ON nodes BEGIN {_SQLITE_DELETE_OLD}; {_SQLITE_EDGES_OF_NEW}; {_SQLITE_HASH_OF_NEW}; END""",
    f"""CREATE TRIGGER IF NOT EXISTS {SQLITE_TRIGGERS[2]} AFTER DELETE ON nodes
BEGIN {_SQLITE_DELETE_OLD}; END""",
)
_PG_TRIGGERS_DDL = (
    f"DROP TRIGGER IF EXISTS {_PG_OLD} ON nodes",
    f"DROP FUNCTION IF EXISTS {_PG_OLD}()",
    f"""CREATE OR REPLACE FUNCTION {PG_FUNCTION}() RETURNS trigger AS $$
BEGIN
  IF TG_OP <> 'INSERT' THEN
    DELETE FROM {TABLE} WHERE child_id = OLD.id;
    DELETE FROM {HASHES} WHERE child_id = OLD.id;
  END IF;
  IF TG_OP <> 'DELETE'
     AND jsonb_typeof(NEW.metadata->'start'->'parent_uids') = 'array' THEN
    INSERT INTO {TABLE}(child_id, container_id, child_uid, parent_uid)
    SELECT NEW.id, NEW.parent, NEW.key, p.value #>> '{{}}'
    FROM jsonb_array_elements(NEW.metadata->'start'->'parent_uids') AS p(value)
    WHERE jsonb_typeof(p.value) = 'string' ON CONFLICT DO NOTHING;
  END IF;
  IF TG_OP <> 'DELETE'
     AND jsonb_typeof(NEW.metadata->'start'->'lineage_hash') = 'string' THEN
    INSERT INTO {HASHES}(child_id, container_id, child_uid, lineage_hash)
    VALUES (NEW.id, NEW.parent, NEW.key, NEW.metadata->'start'->>'lineage_hash')
    ON CONFLICT DO NOTHING;
  END IF;
  RETURN NULL;
END; $$ LANGUAGE plpgsql""",
    f"DROP TRIGGER IF EXISTS {PG_TRIGGER} ON nodes",
    f"""CREATE TRIGGER {PG_TRIGGER} AFTER INSERT OR DELETE OR UPDATE OF metadata, key, parent
ON nodes FOR EACH ROW EXECUTE FUNCTION {PG_FUNCTION}()""",
)

#: Every edge the catalog's nodes imply: what the table must hold.
_EXPECTED = {
    "sqlite": """SELECT n.id, n.parent, n.key, j.value
FROM nodes n, json_each(n.metadata, '$.start.parent_uids') j
WHERE json_type(n.metadata, '$.start.parent_uids') = 'array' AND j.type = 'text'""",
    "postgresql": """SELECT n.id, n.parent, n.key, p.value #>> '{}'
FROM nodes n, jsonb_array_elements(CASE
  WHEN jsonb_typeof(n.metadata->'start'->'parent_uids') = 'array'
  THEN n.metadata->'start'->'parent_uids' ELSE '[]'::jsonb END) AS p(value)
WHERE jsonb_typeof(p.value) = 'string'""",
}
#: Every lineage hash the catalog's nodes carry: what the second table must hold.
_EXPECTED_HASHES = {
    "sqlite": """SELECT n.id, n.parent, n.key, json_extract(n.metadata, '$.start.lineage_hash')
FROM nodes n WHERE json_type(n.metadata, '$.start.lineage_hash') = 'text'""",
    "postgresql": """SELECT n.id, n.parent, n.key, n.metadata->'start'->>'lineage_hash'
FROM nodes n WHERE jsonb_typeof(n.metadata->'start'->'lineage_hash') = 'string'""",
}
_BACKFILL = {
    "sqlite": (
        f"INSERT OR IGNORE INTO {TABLE}({_COLUMNS}) {_EXPECTED['sqlite']}",
        f"INSERT OR IGNORE INTO {HASHES}({_HASH_COLUMNS}) {_EXPECTED_HASHES['sqlite']}",
    ),
    "postgresql": (
        f"INSERT INTO {TABLE}({_COLUMNS}) {_EXPECTED['postgresql']} ON CONFLICT DO NOTHING",
        f"INSERT INTO {HASHES}({_HASH_COLUMNS}) {_EXPECTED_HASHES['postgresql']} "
        "ON CONFLICT DO NOTHING",
    ),
}
_STATUS = {
    "sqlite": "json_extract(n.metadata, '$.stop.exit_status')",
    "postgresql": "(n.metadata->'stop'->>'exit_status')",
}
_START_FIELD = {
    "sqlite": "json_extract(n.metadata, '$.start.{}')",
    "postgresql": "(n.metadata->'start'->>'{}')",
}


def dialect_of(catalog_uri: str) -> Dialect:
    """``"sqlite"`` or ``"postgresql"`` from a catalog URI (an :class:`AnalysisStoreError`
    names any other)."""
    from ..core._errors import AnalysisStoreError

    scheme = catalog_uri.split(":", 1)[0].split("+", 1)[0]
    if scheme in ("sqlite", "postgresql"):
        return scheme  # type: ignore[return-value]
    raise AnalysisStoreError(f"no lineage index for a catalog at {catalog_uri!r}")


# --- the index itself: is it there, install, check, rebuild ---------------------------------


def installed(execute: Execute, dialect: Dialect) -> bool:
    """Are the tables and this version's triggers in the database? (one small query)"""
    if dialect == "sqlite":
        wanted = (TABLE, HASHES, *SQLITE_TRIGGERS)
        listed = ", ".join(f"'{name}'" for name in wanted)
        names = execute(f"SELECT name FROM sqlite_master WHERE name IN ({listed})", None)
        return len({name for (name,) in names}) == len(wanted)
    rows = execute(
        f"SELECT (SELECT count(*) FROM pg_trigger WHERE tgname = '{PG_TRIGGER}' "
        "AND tgrelid = to_regclass('nodes')), "
        f"to_regclass('{TABLE}') IS NOT NULL AND to_regclass('{HASHES}') IS NOT NULL",
        None,
    )
    return bool(rows and rows[0][0] == 1 and rows[0][1])


def install(execute: Execute, dialect: Dialect) -> None:
    """Create the tables, their indexes and triggers (replacing an older version's), and add
    the rows missing (idempotent)."""
    execute(_TABLE_DDL, None)
    execute(_HASHES_DDL, None)
    for statement in _INDEX_DDL:
        execute(statement, None)
    for statement in _SQLITE_TRIGGERS_DDL if dialect == "sqlite" else _PG_TRIGGERS_DDL:
        execute(statement, None)
    for statement in _BACKFILL[dialect]:
        execute(statement, None)


@dataclass(frozen=True)
class IndexState:
    """What :func:`check` found: is the index installed (tables and triggers), and how many
    edges (and lineage hashes) are missing from it or stale in it."""

    installed: bool
    missing: int = 0
    stale: int = 0
    missing_hashes: int = 0
    stale_hashes: int = 0

    @property
    def ok(self) -> bool:
        counts = (self.missing, self.stale, self.missing_hashes, self.stale_hashes)
        return self.installed and not any(counts)


def _check(execute: Execute, dialect: Dialect) -> IndexState:
    if not installed(execute, dialect):
        tables = execute(
            "SELECT name FROM sqlite_master WHERE name IN (:t, :h)"
            if dialect == "sqlite"
            else "SELECT relname FROM pg_class WHERE relname IN (:t, :h)",
            {"t": TABLE, "h": HASHES},
        )
        if len(tables) < 2:
            return IndexState(installed=False)
    count = "SELECT count(*) FROM ({} EXCEPT {}) AS d"

    def differences(expected: str, have: str) -> tuple[int, int]:
        missing = execute(count.format(expected, have), None)[0][0]
        stale = execute(count.format(have, expected), None)[0][0]
        return int(missing), int(stale)

    edges = differences(_EXPECTED[dialect], f"SELECT {_COLUMNS} FROM {TABLE}")
    hashes = differences(_EXPECTED_HASHES[dialect], f"SELECT {_HASH_COLUMNS} FROM {HASHES}")
    return IndexState(installed(execute, dialect), *edges, *hashes)


def _rebuild(execute: Execute, dialect: Dialect) -> None:
    execute(_TABLE_DDL, None)
    execute(_HASHES_DDL, None)
    execute(f"DELETE FROM {TABLE}", None)
    execute(f"DELETE FROM {HASHES}", None)
    install(execute, dialect)


def in_transaction(catalog_uri: str, work: Callable[[Execute], T], *, read_only: bool = False) -> T:
    """Run ``work(execute)`` in one transaction on the catalog database (SQLite: the standard
    library's driver, with ``BEGIN IMMEDIATE`` unless ``read_only``; PostgreSQL: SQLAlchemy's
    async engine)."""
    from sqlalchemy.engine import make_url

    if dialect_of(catalog_uri) == "sqlite":
        import sqlite3

        path = Path(make_url(catalog_uri).database or "")
        if read_only:
            connection = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=60)
        else:
            connection = sqlite3.connect(path, timeout=60)
        connection.isolation_level = None  # transactions as written here
        try:
            connection.execute("BEGIN" if read_only else "BEGIN IMMEDIATE")
            try:
                result = work(lambda sql, params: connection.execute(sql, params or {}).fetchall())
            except BaseException:
                connection.execute("ROLLBACK")
                raise
            connection.execute("COMMIT")
            return result
        finally:
            connection.close()
    from ._relocation import in_thread

    async def run() -> T:
        from sqlalchemy.ext.asyncio import create_async_engine

        engine = create_async_engine(catalog_uri)
        try:
            async with engine.begin() as connection:
                return await connection.run_sync(lambda sync: work(sync_execute(sync)))
        finally:
            await engine.dispose()

    return in_thread(run)


def sync_execute(connection: Any) -> Execute:
    """:data:`Execute` on a SQLAlchemy (sync) connection."""

    def execute(sql: str, params: Mapping[str, Any] | None) -> list[tuple[Any, ...]]:
        if params is None:  # DDL and bodies with $$ or :: pass through untouched
            result = connection.exec_driver_sql(sql)
        else:
            from sqlalchemy import text

            result = connection.execute(text(sql), dict(params))
        return [tuple(row) for row in result.fetchall()] if result.returns_rows else []

    return execute


def ensure(catalog_uri: str) -> bool:
    """Install the index if it (or one of its triggers) is missing, with a backfill; True if
    it did. One small query when it is there."""
    dialect = dialect_of(catalog_uri)

    def work(execute: Execute) -> bool:
        if installed(execute, dialect):
            return False
        _rebuild(execute, dialect)  # exact: runs deleted while triggers were missing too
        return True

    done = in_transaction(catalog_uri, work)
    if done:
        logger.info("installed the lineage index of the catalog %s", _safe(catalog_uri))
    return done


def check(catalog_uri: str) -> IndexState:
    """Compare the index with what the catalog's nodes imply (a full pass: for ``bas fsck``)."""
    dialect = dialect_of(catalog_uri)
    return in_transaction(catalog_uri, lambda execute: _check(execute, dialect), read_only=True)


def rebuild(catalog_uri: str) -> None:
    """Reinstall the triggers and recompute every edge (``bas fsck --repair``)."""
    dialect = dialect_of(catalog_uri)
    in_transaction(catalog_uri, lambda execute: _rebuild(execute, dialect))


def _safe(catalog_uri: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(catalog_uri).render_as_string(hide_password=True)


# --- the queries: one statement each, the same text on both dialects -----------------------


def _in(name: str, values: Sequence[str]) -> tuple[str, dict[str, str]]:
    """``:name0, :name1, ...`` and their parameters (for ``IN (...)``)."""
    params = {f"{name}{i}": value for i, value in enumerate(values)}
    return ", ".join(f":{key}" for key in params) or "NULL", params


def descendant_edges(
    execute: Execute,
    dialect: Dialect,
    container: int,
    uid: str,
    *,
    recursive: bool,
    include_incomplete: bool,
) -> list[tuple[str, str]]:
    """``(parent, child)`` edges below ``uid`` among the runs of ``container`` (one level, or
    the whole subtree through complete runs), in insertion order of the children; only edges
    to complete children unless ``include_incomplete``."""
    status = "" if include_incomplete else f" AND {_STATUS[dialect]} = 'success'"
    params = {"uid": uid, "cid": container}
    if not recursive:
        sql = f"""SELECT e.parent_uid, e.child_uid FROM {TABLE} e JOIN nodes n ON n.id = e.child_id
WHERE e.parent_uid = :uid AND e.container_id = :cid{status} ORDER BY e.child_id"""
        return [(p, c) for p, c in execute(sql, params)]
    sql = f"""WITH RECURSIVE sub(uid) AS (
  SELECT CAST(:uid AS TEXT)
  UNION
  SELECT e.child_uid FROM {TABLE} e JOIN sub ON e.parent_uid = sub.uid
  JOIN nodes n ON n.id = e.child_id WHERE e.container_id = :cid{status})
SELECT e.parent_uid, e.child_uid FROM {TABLE} e JOIN nodes n ON n.id = e.child_id
WHERE e.container_id = :cid AND e.parent_uid IN (SELECT uid FROM sub){status}
ORDER BY e.child_id"""
    return [(p, c) for p, c in execute(sql, params)]


def ancestor_edges(
    execute: Execute, dialect: Dialect, container: int, uid: str
) -> list[tuple[str, str]]:
    """``(parent, child)`` edges above ``uid`` among the runs of ``container``, whatever their
    state (a run's parents are its parents)."""
    sql = f"""WITH RECURSIVE anc(uid) AS (
  SELECT CAST(:uid AS TEXT)
  UNION
  SELECT e.parent_uid FROM {TABLE} e JOIN anc ON e.child_uid = anc.uid
  WHERE e.container_id = :cid)
SELECT e.parent_uid, e.child_uid FROM {TABLE} e
WHERE e.container_id = :cid AND e.child_uid IN (SELECT uid FROM anc)"""
    return [(p, c) for p, c in execute(sql, {"uid": uid, "cid": container})]


def start_documents(
    execute: Execute, dialect: Dialect, container: int, uids: Iterable[str]
) -> dict[str, dict[str, Any]]:
    """The start documents of those of ``uids`` that are runs of ``container``."""
    listed, params = _in("u", sorted(set(uids)))
    start = (
        "json_extract(n.metadata, '$.start')"
        if dialect == "sqlite"
        else "(n.metadata->'start')::text"
    )
    sql = f"SELECT n.key, {start} FROM nodes n WHERE n.parent = :cid AND n.key IN ({listed})"
    rows = execute(sql, {"cid": container, **params})
    return {key: json.loads(text) for key, text in rows if text is not None}


def analysed_parents(
    execute: Execute, dialect: Dialect, container: int, name: str, version: str | None
) -> set[str]:
    """The parents of the complete runs of analysis ``name`` (and ``version``) in
    ``container``."""
    field = _START_FIELD[dialect]
    where = f"{field.format('analysis_name')} = :name"
    params: dict[str, Any] = {"cid": container, "name": name}
    if version is not None:
        where += f" AND {field.format('analysis_version')} = :version"
        params["version"] = version
    sql = f"""SELECT DISTINCT e.parent_uid FROM {TABLE} e JOIN nodes n ON n.id = e.child_id
WHERE e.container_id = :cid AND {where} AND {_STATUS[dialect]} = 'success'"""
    return {parent for (parent,) in execute(sql, params)}


def runs_of_lineage(
    execute: Execute,
    dialect: Dialect,
    container: int,
    lineage_hash: str,
    *,
    include_incomplete: bool,
) -> list[tuple[str, str | None]]:
    """``(uid, content_hash)`` of the runs of ``container`` with this lineage hash, in
    insertion order; only the complete ones unless ``include_incomplete``."""
    status = "" if include_incomplete else f" AND {_STATUS[dialect]} = 'success'"
    sql = f"""SELECT h.child_uid, {_START_FIELD[dialect].format("content_hash")}
FROM {HASHES} h JOIN nodes n ON n.id = h.child_id
WHERE h.lineage_hash = :hash AND h.container_id = :cid{status} ORDER BY h.child_id"""
    return [
        (uid, content) for uid, content in execute(sql, {"hash": lineage_hash, "cid": container})
    ]


#: The questions :func:`answer` answers, each with the string argument it needs.
QUESTIONS = {
    "descendants": "uid",
    "lineage": "uid",
    "analysed": "name",
    "with_lineage": "lineage_hash",
}
#: The route's question about the index itself (:func:`health`): ``bas fsck`` of a served store.
HEALTH = "health"


def health(execute: Execute, dialect: Dialect) -> dict[str, Any]:
    """:func:`check`'s :class:`IndexState` as JSON, on a connection the caller holds (the
    store's route answers ``bas fsck`` of a served store with it: a full pass)."""
    import dataclasses

    return dataclasses.asdict(_check(execute, dialect))


def answer(
    execute: Execute, dialect: Dialect, container: int, ask: str, args: Mapping[str, Any]
) -> dict[str, Any]:
    """The JSON answer to one lineage question about ``container`` (what the store's route
    returns, and what an embedded store computes in process).

    Raises
    ------
    AnalysisInputError
        An unknown question, or one without the arguments it needs (``uid``; ``name``).
    """
    needed = QUESTIONS.get(ask)
    if needed is None or not isinstance(args.get(needed), str):
        raise AnalysisInputError(
            f"lineage question {ask!r} with args {sorted(args)}: ask 'descendants' or "
            "'lineage' with a string 'uid', 'analysed' with a string 'name', or "
            "'with_lineage' with a string 'lineage_hash'"
        )
    if ask == "descendants":
        edges = descendant_edges(
            execute,
            dialect,
            container,
            str(args["uid"]),
            recursive=bool(args.get("recursive")),
            include_incomplete=bool(args.get("include_incomplete")),
        )
        return {"edges": edges}
    if ask == "lineage":
        uid = str(args["uid"])
        up = ancestor_edges(execute, dialect, container, uid)
        down = descendant_edges(
            execute, dialect, container, uid, recursive=True, include_incomplete=False
        )
        runs = {uid} | {u for edge in up + down for u in edge}
        starts = start_documents(execute, dialect, container, runs)
        return {"up": up, "down": down, "starts": starts}
    if ask == "analysed":
        version = None if args.get("version") is None else str(args["version"])
        parents = analysed_parents(execute, dialect, container, str(args["name"]), version)
        return {"parents": sorted(parents)}
    if ask == "with_lineage":
        same = runs_of_lineage(
            execute,
            dialect,
            container,
            str(args["lineage_hash"]),
            include_incomplete=bool(args.get("include_incomplete")),
        )
        return {"runs": same}
    raise AnalysisInputError(f"unknown lineage question {ask!r}")  # not reached: checked above
