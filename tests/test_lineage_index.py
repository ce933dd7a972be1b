"""The lineage index (store/_lineage_index.py): the same answers as a scan, kept by triggers
on SQLite and PostgreSQL, installed on a writable open and by ``bas fsck --repair``."""

from __future__ import annotations

import logging
import sqlite3
from typing import Any

from helpers import PARENT_UID, make_provenance

from bluesky_analysis_store import AnalysisStore
from bluesky_analysis_store.store._failures import missing_analysis
from bluesky_analysis_store.store._lineage_graph import build_lineage_graph
from bluesky_analysis_store.store._lineage_index import SQLITE_TRIGGERS, TABLE, check
from bluesky_analysis_store.store._queries import derived_from

OTHER_RAW = "a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d"


def _run(store: AnalysisStore, parents: list[str], name: str, status: str = "success") -> str:
    """A run of analysis ``name`` with a start and a stop and no data (fast)."""
    import event_model

    from bluesky_analysis_store.provenance._policy import ProvenancePolicy, enforce_provenance
    from bluesky_analysis_store.provenance._start_metadata import start_metadata

    policy = ProvenancePolicy()
    provenance = make_provenance(parents=parents, name=name, parameters={"n": len(store.runs)})
    bundle = event_model.compose_run(
        metadata=start_metadata({}, enforce_provenance(provenance, policy), policy)
    )
    store.insert("start", dict(bundle.start_doc))
    store.insert("stop", dict(bundle.compose_stop(exit_status=status)))
    return str(bundle.start_doc["uid"])


def _branching(store: AnalysisStore) -> dict[str, str]:
    """raw P, Q → a, b (from P), c (from a), d (from a and b), e (from c and d), f (failed, from
    a), g (from f: below a failure), h (from Q, another analysis)."""
    runs = {"a": _run(store, [PARENT_UID], "reduce"), "b": _run(store, [PARENT_UID], "reduce")}
    runs["c"] = _run(store, [runs["a"]], "fit")
    runs["d"] = _run(store, [runs["a"], runs["b"]], "fit")
    runs["e"] = _run(store, [runs["c"], runs["d"]], "report")
    runs["f"] = _run(store, [runs["a"]], "fit", status="fail")
    runs["g"] = _run(store, [runs["f"]], "report")
    runs["h"] = _run(store, [OTHER_RAW], "reduce")
    return runs


def _graph(graph: Any) -> tuple[Any, ...]:
    return graph.focus, sorted(graph.edges), sorted(graph.nodes.items())


def _assert_same_as_scan(store: AnalysisStore, uids: list[str]) -> None:
    for uid in uids:
        for recursive in (False, True):
            for include_incomplete in (False, True):
                options = {"recursive": recursive, "include_incomplete": include_incomplete}
                indexed = store.derived_from(uid, **options)
                scanned = derived_from(store.runs, uid, **options)
                assert sorted(indexed) == sorted(scanned), (uid, options)
                assert len(indexed) == len(set(indexed))
        if uid not in store:  # a raw uid: no lineage to draw (NotFoundError either way)
            continue
        indexed_graph = store.lineage(uid)
        scanned_graph = build_lineage_graph(
            store.start_document(uid),
            lambda uids: {u: s for u in uids if (s := store.start_document(u)) is not None},
            lambda u: {c: store.start_document(c) for c in derived_from(store.runs, u)},
        )
        assert _graph(indexed_graph) == _graph(scanned_graph), uid
    for name in ("reduce", "fit", "report", "none"):
        raw = [PARENT_UID, OTHER_RAW, *uids]
        assert store.missing_analysis(name, raw) == missing_analysis(store.runs, None, name, raw), (
            name
        )


def test_the_index_answers_as_the_scan_with_deletes_and_replaced_metadata(any_catalog):
    store = AnalysisStore(any_catalog.new_runs_container(), any_catalog.new_root())
    runs = _branching(store)
    assert store._lineage.ask("descendants", uid=PARENT_UID) is not None  # the index answers
    assert sorted(store.derived_from(PARENT_UID)) == sorted([runs["a"], runs["b"]])
    below = store.derived_from(PARENT_UID, recursive=True)
    assert below[:2] == [runs["a"], runs["b"]]  # breadth first
    assert set(below[2:]) == {runs["c"], runs["d"], runs["e"]}  # g is below a failed run
    assert runs["g"] in store.derived_from(PARENT_UID, recursive=True, include_incomplete=True)
    assert store.missing_analysis("fit", [PARENT_UID, OTHER_RAW, runs["a"], runs["b"]]) == [
        PARENT_UID,
        OTHER_RAW,
    ]
    _assert_same_as_scan(store, [PARENT_UID, OTHER_RAW, *runs.values()])

    from bluesky_analysis_store.store._fsck import delete_run

    delete_run(store.runs[runs["d"]])  # a diamond's middle goes
    start = dict(store.runs[runs["c"]].metadata["start"])
    start["parent_uids"] = [runs["b"]]  # replaced metadata: c now derives from b
    store.runs[runs["c"]].replace_metadata({**store.runs[runs["c"]].metadata, "start": start})
    assert store.derived_from(runs["b"]) == [runs["c"]]
    assert store.derived_from(runs["a"]) == []
    del runs["d"]
    _assert_same_as_scan(store, [PARENT_UID, OTHER_RAW, *runs.values()])


def _embedded(directory: Any, **options: Any) -> AnalysisStore:
    return AnalysisStore.open(directory, **options)


def _drop(catalog: Any, *, table: bool) -> None:
    """What a tiled migration that rebuilds ``nodes`` does to the triggers (and, with
    ``table``, a store from before the index)."""
    with sqlite3.connect(catalog) as connection:
        for trigger in SQLITE_TRIGGERS:
            connection.execute(f"DROP TRIGGER {trigger}")
        if table:
            connection.execute(f"DROP TABLE {TABLE}")
    connection.close()


def test_an_embedded_store_gains_the_index_on_open_and_by_fsck_repair(tmp_path, caplog):
    from bluesky_analysis_store.store._fsck import check_store, repair

    directory = tmp_path / "store"
    catalog = directory / "catalog.db"
    uri = f"sqlite+aiosqlite:///{catalog}"
    with _embedded(directory) as store:
        runs = _branching(store)
        assert type(store._lineage).__name__ == "SqliteReader"  # in process, no request
        assert store._lineage.ask("descendants", uid=PARENT_UID) is not None
        _assert_same_as_scan(store, [PARENT_UID, *runs.values()])
    assert check(uri).ok

    # a store from before the index: a read-only open searches by scan, and says so once
    _drop(catalog, table=True)
    assert not check(uri).installed
    with caplog.at_level(logging.WARNING), _embedded(directory, read_only=True) as store:
        assert store._lineage.ask("descendants", uid=PARENT_UID) is None
        assert sorted(store.derived_from(PARENT_UID)) == sorted([runs["a"], runs["b"]])
        assert store.lineage(runs["e"]).ancestors()  # by scan
        report = check_store(store, grace=0)
        assert "lineage index: not installed" in report.as_text()
        assert not report.clean
    assert sum("lineage index" in r.getMessage() for r in caplog.records) == 1
    assert not check(uri).installed  # read-only wrote nothing

    # fsck --repair (a writable open) installs it, with every edge
    with _embedded(directory) as store:
        assert check(uri).ok
        assert check_store(store, grace=0).lineage_index == ""
        _assert_same_as_scan(store, [PARENT_UID, *runs.values()])

    # triggers dropped by a migration, runs deleted meanwhile: a writable open reinstalls them
    _drop(catalog, table=False)
    with sqlite3.connect(catalog) as connection:
        connection.execute("DELETE FROM nodes WHERE key = ?", (runs["h"],))
    connection.close()
    assert not check(uri).installed
    with _embedded(directory) as store:
        assert check(uri).ok
        assert runs["h"] not in store.derived_from(OTHER_RAW)

        # stale edges with the triggers in place: fsck reports them, --repair rebuilds
        with sqlite3.connect(catalog) as connection:
            connection.execute(
                f"INSERT INTO {TABLE} VALUES (999999, 1, 'nobody', ?)", (PARENT_UID,)
            )
        connection.close()
        report = check_store(store, grace=0)
        assert report.lineage_index == "0 edge(s) missing, 1 stale"
        assert repair(store, report).rebuilt_lineage_index
        assert check(uri).ok


def test_a_postgresql_catalog_reinstalls_dropped_triggers(postgres_server, tmp_path):
    from bluesky_analysis_store.store._catalog import catalog_tree
    from bluesky_analysis_store.store._lineage_index import PG_TRIGGER, in_transaction

    uri = f"postgresql+asyncpg://{postgres_server}/catalog"
    tables = f"postgresql://{postgres_server}/tables"
    catalog_tree(uri, tmp_path, tables_uri=tables)
    assert check(uri).ok
    in_transaction(uri, lambda execute: execute(f"DROP TRIGGER {PG_TRIGGER} ON nodes", None))
    assert not check(uri).installed
    catalog_tree(uri, tmp_path, tables_uri=tables, read_only=True)
    assert not check(uri).installed  # read-only: untouched
    catalog_tree(uri, tmp_path, tables_uri=tables)
    assert check(uri).ok


def test_a_postgresql_store_read_in_process_answers_as_the_scan(postgres_catalog, postgres_server):
    from bluesky_analysis_store.store._lineage_reader import PostgresReader

    runs = postgres_catalog.new_runs_container()
    index = PostgresReader(f"postgresql+asyncpg://{postgres_server}/catalog", runs.path_parts)
    with AnalysisStore(runs, postgres_catalog.new_root(), lineage_index=index) as store:
        made = _branching(store)
        assert index.ask("descendants", uid=PARENT_UID) is not None
        _assert_same_as_scan(store, [PARENT_UID, OTHER_RAW, *made.values()])
