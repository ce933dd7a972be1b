"""The lineage index (store/_lineage_index.py): the same answers as a scan, kept by triggers
on SQLite and PostgreSQL, installed on a writable open and by ``bas fsck --repair``; with it,
``with_lineage``, the save's lookup of its lineage and ``search(DerivedFrom(...))``."""

from __future__ import annotations

import logging
import sqlite3
from typing import Any

import pytest
from helpers import PARENT_UID, make_provenance

from bluesky_analysis_store import AnalysisStore, RunConflictError
from bluesky_analysis_store.store._failures import missing_analysis
from bluesky_analysis_store.store._lineage_graph import build_lineage_graph
from bluesky_analysis_store.store._lineage_index import HASHES, SQLITE_TRIGGERS, TABLE, check
from bluesky_analysis_store.store._queries import (
    AnalysisName,
    DerivedFrom,
    ExitStatus,
    LineageHash,
    derived_from,
    finished,
    search,
)

OTHER_RAW = "a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d"
THIRD_RAW = "0f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0"


def _run(
    store: AnalysisStore,
    parents: list[str],
    name: str,
    status: str | None = "success",
    parameters: dict[str, Any] | None = None,
) -> str:
    """A run of analysis ``name`` with a start and a stop (none if ``status`` is None) and no
    data (fast); its own lineage unless ``parameters`` are given."""
    import event_model

    from bluesky_analysis_store.provenance._policy import ProvenancePolicy, enforce_provenance
    from bluesky_analysis_store.provenance._start_metadata import start_metadata

    policy = ProvenancePolicy()
    parameters = {"n": len(store.runs)} if parameters is None else parameters
    provenance = make_provenance(parents=parents, name=name, parameters=parameters)
    bundle = event_model.compose_run(
        metadata=start_metadata({}, enforce_provenance(provenance, policy), policy)
    )
    store.insert("start", dict(bundle.start_doc))
    if status is not None:
        store.insert("stop", dict(bundle.compose_stop(exit_status=status)))
    return str(bundle.start_doc["uid"])


def _same_lineage(store: AnalysisStore) -> tuple[str, list[str]]:
    """Three runs of one lineage from a third raw run: complete, failed, still being written."""
    runs = [
        _run(store, [THIRD_RAW], "again", status, parameters={"same": True})
        for status in ("success", "fail", None)
    ]
    return _hash(store, runs[0]), runs


def _hash(store: AnalysisStore, uid: str) -> str:
    return str(store.runs[uid].metadata["start"]["lineage_hash"])


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
    hashes = {_hash(store, uid) for uid in uids if uid in store} | {"0" * 64}
    for lineage_hash in hashes:
        for include_incomplete in (False, True):
            indexed = store.with_lineage(lineage_hash, include_incomplete=include_incomplete)
            scanned = finished(
                store.runs, LineageHash(lineage_hash), include_incomplete=include_incomplete
            )
            assert sorted(indexed) == sorted(scanned), (lineage_hash, include_incomplete)
            if include_incomplete:  # what the search by LineageHash finds too
                assert sorted(store.search(LineageHash(lineage_hash))) == sorted(scanned)
    combined: list[list[Any]] = [[], [ExitStatus("success")], [AnalysisName("fit")]]
    for i, uid in enumerate(uids):  # each with one of the combinations, in turn
        queries = [DerivedFrom(uid), *combined[i % len(combined)]]
        assert sorted(store.search(*queries)) == sorted(search(store.runs, *queries)), uid


def test_the_index_answers_as_the_scan_with_deletes_and_replaced_metadata(any_catalog):
    store = AnalysisStore(any_catalog.new_runs_container(), any_catalog.new_root())
    runs = _branching(store)
    same, again = _same_lineage(store)
    assert store._lineage.ask("descendants", uid=PARENT_UID) is not None  # the index answers
    assert store._lineage.ask("with_lineage", lineage_hash=same) is not None
    assert store.with_lineage(same) == again[:1]  # complete runs only
    assert store.with_lineage(same, include_incomplete=True) == again  # in insertion order
    assert sorted(store.derived_from(PARENT_UID)) == sorted([runs["a"], runs["b"]])
    below = store.derived_from(PARENT_UID, recursive=True)
    assert below[:2] == [runs["a"], runs["b"]]  # breadth first
    assert set(below[2:]) == {runs["c"], runs["d"], runs["e"]}  # g is below a failed run
    assert runs["g"] in store.derived_from(PARENT_UID, recursive=True, include_incomplete=True)
    assert store.missing_analysis("fit", [PARENT_UID, OTHER_RAW, runs["a"], runs["b"]]) == [
        PARENT_UID,
        OTHER_RAW,
    ]
    _assert_same_as_scan(store, [PARENT_UID, OTHER_RAW, THIRD_RAW, *runs.values(), *again])
    # search: the runs the index names, searched by key with the other queries
    queries = [DerivedFrom(THIRD_RAW), LineageHash(same), ExitStatus("fail")]
    keys, *rest = store._from_index(queries)
    assert sorted(keys.keys) == sorted(again)
    assert rest == [ExitStatus("fail")]
    assert list(store.search(DerivedFrom(THIRD_RAW), LineageHash(same))) == again
    assert list(store.search(DerivedFrom(THIRD_RAW), ExitStatus("fail"))) == again[1:2]
    assert list(store.search(DerivedFrom(runs["h"]))) == []  # no child: no run

    from bluesky_analysis_store.store._fsck import delete_run

    delete_run(store.runs[runs["d"]])  # a diamond's middle goes
    delete_run(store.runs[again[0]])  # the lineage's complete run goes
    start = dict(store.runs[runs["c"]].metadata["start"])
    start["parent_uids"] = [runs["b"]]  # replaced metadata: c now derives from b
    old_hash, start["lineage_hash"] = start["lineage_hash"], same  # ... in lineage `same`
    store.runs[runs["c"]].replace_metadata({**store.runs[runs["c"]].metadata, "start": start})
    assert store.derived_from(runs["b"]) == [runs["c"]]
    assert store.derived_from(runs["a"]) == []
    assert store.with_lineage(old_hash) == []
    assert store.with_lineage(same) == [runs["c"]]
    del runs["d"]
    _assert_same_as_scan(store, [PARENT_UID, OTHER_RAW, THIRD_RAW, *runs.values(), *again[1:]])


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
            connection.execute(f"DROP TABLE {HASHES}")
    connection.close()


def _version_1(catalog: Any) -> None:
    """A store whose index is version 1's: the edges and their triggers, no lineage hashes."""
    _drop(catalog, table=False)
    with sqlite3.connect(catalog) as connection:
        connection.execute(f"DROP TABLE {HASHES}")
        for old in ("bas_lineage_v1_ai", "bas_lineage_v1_au", "bas_lineage_v1_ad"):
            event = {"ai": "INSERT", "au": "UPDATE", "ad": "DELETE"}[old[-2:]]
            connection.execute(  # their bodies do not matter here: that they go does
                f"CREATE TRIGGER {old} AFTER {event} ON nodes BEGIN SELECT 1; END"
            )
    connection.close()


def _triggers(catalog: Any) -> set[str]:
    with sqlite3.connect(catalog) as connection:
        rows = connection.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")
        names = {name for (name,) in rows if name.startswith("bas_")}
    connection.close()
    return names


def test_an_embedded_store_gains_the_index_on_open_and_by_fsck_repair(tmp_path, caplog):
    from bluesky_analysis_store.store._fsck import check_store, repair

    directory = tmp_path / "store"
    catalog = directory / "catalog.db"
    uri = f"sqlite+aiosqlite:///{catalog}"
    with _embedded(directory) as store:
        runs = _branching(store)
        same, again = _same_lineage(store)
        assert type(store._lineage).__name__ == "SqliteReader"  # in process, no request
        assert store._lineage.ask("descendants", uid=PARENT_UID) is not None
        _assert_same_as_scan(store, [PARENT_UID, *runs.values()])
    assert check(uri).ok

    # a store with version 1 of the index (no lineage hashes): a writable open upgrades it
    _version_1(catalog)
    assert not check(uri).installed
    with _embedded(directory) as store:
        assert check(uri).ok
        assert _triggers(catalog) == set(SQLITE_TRIGGERS)  # version 1's are gone
        assert store._lineage.ask("with_lineage", lineage_hash=same) is not None
        assert store.with_lineage(same, include_incomplete=True) == again

    # a store from before the index: a read-only open searches by scan, and says so once
    _drop(catalog, table=True)
    assert not check(uri).installed
    with caplog.at_level(logging.WARNING), _embedded(directory, read_only=True) as store:
        assert store._lineage.ask("descendants", uid=PARENT_UID) is None
        assert sorted(store.derived_from(PARENT_UID)) == sorted([runs["a"], runs["b"]])
        assert store.lineage(runs["e"]).ancestors()  # by scan
        assert store.with_lineage(same) == again[:1]  # by scan
        assert sorted(store.with_lineage(same, include_incomplete=True)) == sorted(again)
        assert sorted(store.search(DerivedFrom(THIRD_RAW), LineageHash(same))) == sorted(again)
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

        # a lineage hash lost (the triggers in place): fsck reports it, --repair rebuilds
        with sqlite3.connect(catalog) as connection:
            connection.execute(f"DELETE FROM {HASHES} WHERE child_uid = ?", (again[0],))
        connection.close()
        assert store.with_lineage(same) == []  # what the index says
        report = check_store(store, grace=0)
        assert report.lineage_index.endswith("; 1 lineage hash(es) missing, 0 stale")
        assert repair(store, report).rebuilt_lineage_index
        assert check(uri).ok
        assert store.with_lineage(same) == again[:1]


def test_a_save_finds_its_lineage_in_the_index_or_by_scan(tmp_path):
    """The save's lookup of its lineage (idempotence): from the index in process; by scan when
    the catalog has none (here: lost while the store is open), with the same outcomes."""
    data = [{"primary": {"x": 1.0}}]
    for with_index in (True, False):
        directory = tmp_path / f"index-{with_index}"
        with _embedded(directory) as store:
            if not with_index:
                _drop(directory / "catalog.db", table=True)
            provenance = make_provenance(parameters={"with_index": with_index})
            uid = store.save(data, {"k": 1}, provenance=provenance)
            answer = store._lineage.ask("with_lineage", lineage_hash=provenance.lineage_hash())
            if with_index:  # the run and its content hash, without a request
                content = store.runs[uid].metadata["start"]["content_hash"]
                assert [tuple(run) for run in answer["runs"]] == [(uid, content)]
            else:
                assert answer is None
            assert store.save(data, {"k": 1}, provenance=provenance) == uid  # already saved
            with pytest.raises(RunConflictError, match=f"already saved as run\\(s\\) {uid}"):
                store.save([{"primary": {"x": 2.0}}], {"k": 1}, provenance=provenance)
            again = store.save(data, {"k": 2}, provenance=provenance, new_version=True)
            assert store.with_lineage(provenance.lineage_hash()) == [uid, again]
            assert list(store) == [uid, again]


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


def test_fsck_of_a_served_store_asks_its_server_about_the_index(bas_server):
    """``bas fsck --store URI``: the server checks its own catalog's index through the store's
    route (the read-only key may ask); repair is the server's, when it starts."""
    from served import READ_KEY

    from bluesky_analysis_store.store._fsck import check_store
    from bluesky_analysis_store.store._lineage_index import in_transaction, rebuild

    if bas_server.backend == "sqlite":
        uri = f"sqlite+aiosqlite:///{bas_server.directory / 'catalog.db'}"
    else:
        uri = f"postgresql+asyncpg://{bas_server.postgres}/catalog"
    root = bas_server.directory / "files"
    with AnalysisStore.open(bas_server.uri, api_key=READ_KEY, root=root, read_only=True) as store:
        assert check_store(store).lineage_index == ""
        plant = f"INSERT INTO {TABLE} VALUES (999999, 1, 'nobody', :parent)"
        in_transaction(uri, lambda execute: execute(plant, {"parent": PARENT_UID}))
        try:
            report = check_store(store)
        finally:
            rebuild(uri)  # the shared server's catalog, as it was
        assert report.lineage_index == "0 edge(s) missing, 1 stale"
        assert not report.index_here
        assert "lineage index: 0 edge(s) missing, 1 stale (restart `bas serve`" in report.as_text()
        assert report.repairable < report.problems  # not this process's to rebuild
        assert check_store(store).lineage_index == ""
    assert check(uri).ok
