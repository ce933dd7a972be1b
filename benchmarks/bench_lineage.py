"""Lineage queries against the size of the catalog (issue 13, part 3).

    .venv/bin/python benchmarks/bench_lineage.py [--sizes 1000 100000] [--queries 30]
        [--postgresql] [--scan]

For each size N, a store gets N analysis runs written straight into tiled's ``nodes`` table (the
benchmark's own fast path: one SQL insert a run, so tiled's triggers and the lineage index's
fire as for any insert); 10% derive from raw uids, the rest from one or two earlier runs. Each
catalog also holds 20 probe raw uids with 5 analysis runs each, a subtree of 1,000 runs below
one raw uid (10 → 90 → 900) and a chain of depth 5. Then, through the public API only
(``AnalysisStore``):

* ``store.derived_from(probe)`` (5 runs, complete ones), for random probes;
* ``store.derived_from(root, recursive=True)``: the subtree of 1,000 runs;
* ``store.lineage(end)``: the chain's end, 5 ancestors;
* ``store.with_lineage(hash)`` of a probe's run (1 run), the question every save asks first;
* ``store.search(DerivedFrom(probe))`` with the 5 runs' metadata (what ``bas search
  --derived-from`` prints): the index names the runs, one search fetches them by key;
* ``store.save`` of a small new run (one scalar, a lineage of its own): the lookup of its
  lineage (idempotence) and the insert, against the size of the catalog.

SQLite: the embedded store (``AnalysisStore.open(directory)``), which reads its index in
process. PostgreSQL (``--postgresql``: a throwaway cluster, as the tests start): the store's
in-process app on a PostgreSQL catalog, asked through its one lineage route (one request a
query, as a served store's clients ask), or with ``--direct`` read over a connection of the
store's own (``PostgresReader``). ``--skip-sqlite`` runs PostgreSQL only.
``--scan`` also times, as before the index, ``derived_from`` by tiled's ``Contains`` search,
``with_lineage`` by tiled's ``Eq`` search, the save's lookup (``Eq`` on the lineage hash and the
exit status, with the runs' metadata) and ``search(DerivedFrom(probe))`` by ``Contains``.
Each query is timed ``--queries`` times, interleaved; median and p95 (p5–p95 spread).
Everything lives in a temporary directory removed at the end.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench_store import scratch_directory

from bluesky_analysis_store import (
    AnalysisStore,
    DerivedFrom,
    ExitStatus,
    LineageHash,
    Provenance,
    capture_provenance,
)
from bluesky_analysis_store.store._lineage_index import in_transaction
from bluesky_analysis_store.store._queries import derived_from as scan_derived_from
from bluesky_analysis_store.store._queries import finished, search

PROBES = 20


def _uid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _start(uid: str, parents: list[str], name: str = "reduce") -> dict[str, Any]:
    return {
        "start": {
            "uid": uid,
            "time": 0.0,
            "parent_uids": parents,
            "analysis_name": name,
            "analysis_version": "1.0",
            "lineage_hash": uid.replace("-", "") * 2,
        },
        "stop": {"exit_status": "success", "run_start": uid},
    }


def bench_analysis(data: Any) -> Any:
    """The analysis whose small runs the benchmark saves."""
    return data


bench_analysis.version = "1.0"  # type: ignore[attr-defined]
bench_analysis.url = "https://example.org/bench-analysis"  # type: ignore[attr-defined]


def synthetic_runs(size: int, seed: int = 0) -> tuple[list[tuple[str, Any]], dict[str, Any]]:
    """``(uid, metadata)`` of ``size`` runs plus the probes, the subtree and the chain."""
    rng = random.Random(seed)
    raw = [_uid(rng) for _ in range(max(10, size // 100))]
    runs: list[tuple[str, Any]] = []
    for i in range(size):
        uid = _uid(rng)
        if i < 10 or rng.random() < 0.1:
            parents = [rng.choice(raw)]
        else:
            parents = list({runs[rng.randrange(i)][0] for _ in range(rng.choice((1, 2)))})
        runs.append((uid, _start(uid, parents)))
    probes = [_uid(rng) for _ in range(PROBES)]
    for probe in probes:
        runs += [(u, _start(u, [probe], "probe")) for u in (_uid(rng) for _ in range(5))]
    root = _uid(rng)
    level = [root]
    for width in (10, 90, 900):  # each run of a level has width/len(level) children
        nxt = []
        for j in range(width):
            uid = _uid(rng)
            runs.append((uid, _start(uid, [level[j % len(level)]], "subtree")))
            nxt.append(uid)
        level = nxt
    chain = [_uid(rng)]
    for _ in range(5):
        uid = _uid(rng)
        runs.append((uid, _start(uid, [chain[-1]], "chain")))
        chain.append(uid)
    hashes = [
        md["start"]["lineage_hash"] for _, md in runs if md["start"]["parent_uids"][0] in probes
    ]
    return runs, {"probes": probes, "root": root, "chain": chain, "hashes": hashes}


def populate(catalog_uri: str, container: int, runs: list[tuple[str, Any]]) -> float:
    """Insert ``runs`` as children of node ``container`` in one transaction; seconds."""
    postgres = catalog_uri.startswith("postgresql")
    metadata = "CAST(:m AS JSONB)" if postgres else ":m"
    specs = "CAST(:s AS JSONB)" if postgres else ":s"
    sql = (
        "INSERT INTO nodes(parent, key, structure_family, metadata, specs) "
        f"VALUES (:p, :k, 'container', {metadata}, {specs})"
    )
    spec = json.dumps([{"name": "BlueskyRun", "version": "3.0"}])
    rows = [{"p": container, "k": uid, "m": json.dumps(md), "s": spec} for uid, md in runs]

    began = time.perf_counter()
    if postgres:
        _postgres_many(catalog_uri, sql, rows)
        # the statistics autovacuum would gather soon after: the planner's view of 100,000
        # new rows (without it, it plans for the empty table it last saw)
        in_transaction(catalog_uri, lambda execute: execute("ANALYZE", None))
    else:
        import sqlite3

        from sqlalchemy.engine import make_url

        connection = sqlite3.connect(make_url(catalog_uri).database or "")
        with connection:
            for start in range(0, len(rows), 5000):
                connection.executemany(sql, rows[start : start + 5000])
        connection.close()
    return time.perf_counter() - began


def _postgres_many(catalog_uri: str, sql: str, rows: list[dict[str, Any]]) -> None:
    from bluesky_analysis_store.store._relocation import in_thread

    async def run() -> None:
        from sqlalchemy import text
        from sqlalchemy.ext.asyncio import create_async_engine

        engine = create_async_engine(catalog_uri)
        try:
            async with engine.begin() as connection:
                for start in range(0, len(rows), 5000):
                    await connection.execute(text(sql), rows[start : start + 5000])
        finally:
            await engine.dispose()

    in_thread(run)


def container_node(catalog_uri: str, name: str) -> int:
    rows = in_transaction(
        catalog_uri,
        lambda execute: execute("SELECT id FROM nodes WHERE parent = 0 AND key = :k", {"k": name}),
        read_only=True,
    )
    return int(rows[0][0])


@contextmanager
def sqlite_store(directory: Path) -> Iterator[tuple[AnalysisStore, str, str]]:
    with AnalysisStore.open(directory) as store:
        yield store, f"sqlite+aiosqlite:///{directory / 'catalog.db'}", store.runs.path_parts[-1]


@contextmanager
def postgres_store(
    directory: Path, server: str, size: int, read_directly: bool
) -> Iterator[tuple[Any, str, str]]:
    from bluesky_analysis_store.store._catalog import catalog_tree, in_process_client

    database = f"catalog{size}"
    _create_database(server, database)
    _create_database(server, f"tables{size}")
    uri = f"postgresql+asyncpg://{server}/{database}"
    tree = catalog_tree(uri, directory, tables_uri=f"postgresql://{server}/tables{size}")
    context, client = in_process_client(tree)
    try:
        name = uuid.uuid4().hex
        from tiled.structures.core import Spec

        runs = client.create_container(name, specs=[Spec("CatalogOfBlueskyRuns", version="3.0")])
        if read_directly:  # this process reaches the catalog: no request
            from bluesky_analysis_store.store._lineage_reader import PostgresReader

            index: Any = PostgresReader(uri, runs.path_parts)
        else:  # the store's route, one request a question (as a served store's clients)
            index = None
        with AnalysisStore(runs, directory / "files", lineage_index=index) as store:
            yield store, uri, name
    finally:
        context.close()


def _create_database(server: str, database: str) -> None:
    import glob
    import subprocess

    host, port = server.split("@")[1].split(":")
    createdb = sorted(glob.glob("/usr/lib/postgresql/*/bin/createdb"))[-1]
    command = f"{createdb} -h {host} -p {port} -U tiled {database}"
    subprocess.run(["su", "postgres", "-s", "/bin/bash", "-c", command], check=True)


def timed(queries: dict[str, Callable[[], Any]], repeats: int) -> dict[str, list[float]]:
    """Each query ``repeats`` times, in a rotating order; milliseconds."""
    times: dict[str, list[float]] = {name: [] for name in queries}
    names = list(queries)
    for i in range(repeats):
        for name in names[i % len(names) :] + names[: i % len(names)]:
            began = time.perf_counter()
            queries[name]()
            times[name].append((time.perf_counter() - began) * 1000)
    return times


def summary(values: list[float]) -> str:
    ordered = sorted(values)
    p = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return f"{statistics.median(values):8.2f} ms (p5 {p(0.05):.2f}, p95 {p(0.95):.2f})"


def bench(store: Any, catalog_uri: str, name: str, size: int, args: Any) -> dict[str, float]:
    runs, shape = synthetic_runs(size)
    container = container_node(catalog_uri, name)
    seconds = populate(catalog_uri, container, runs)
    print(f"  populated {len(runs):,} runs in {seconds:.1f} s (triggers included)", flush=True)
    rng = random.Random(1)
    chain_end = shape["chain"][-1]
    assert len(store.derived_from(shape["root"], recursive=True)) == 1000
    assert store.lineage(chain_end).ancestors() == shape["chain"][-2::-1]
    assert len(store.with_lineage(shape["hashes"][0])) == 1
    assert len(dict(store.search(DerivedFrom(shape["probes"][0])).items())) == 5
    saves = iter(_provenances(shape["probes"], args.queries + 1))
    queries: dict[str, Callable[[], Any]] = {
        "derived_from (5 runs)": lambda: store.derived_from(rng.choice(shape["probes"])),
        "derived_from recursive (1,000 runs)": lambda: store.derived_from(
            shape["root"], recursive=True
        ),
        "lineage, depth-5 chain": lambda: store.lineage(chain_end),
        "with_lineage (1 run)": lambda: store.with_lineage(rng.choice(shape["hashes"])),
        "search(DerivedFrom), 5 runs' metadata": lambda: dict(
            store.search(DerivedFrom(rng.choice(shape["probes"]))).items()
        ),
        "save, a small new run": lambda: _save(store, next(saves)),
    }
    if args.scan:
        queries["derived_from by scan (before)"] = lambda: scan_derived_from(
            store.runs, rng.choice(shape["probes"])
        )
        queries["with_lineage by scan (before)"] = lambda: finished(
            store.runs, LineageHash(rng.choice(shape["hashes"]))
        )
        queries["save's lineage lookup by scan (before)"] = lambda: dict(
            search(
                store.runs, LineageHash(rng.choice(shape["hashes"])), ExitStatus("success")
            ).items()
        )
        queries["search(DerivedFrom) by scan (before)"] = lambda: dict(
            search(store.runs, DerivedFrom(rng.choice(shape["probes"]))).items()
        )
    for query in queries.values():  # warm
        query()
    times = timed(queries, args.queries)
    for query, values in times.items():
        print(f"  {query:38s} {summary(values)}", flush=True)
    return {query: statistics.median(values) for query, values in times.items()}


def _provenances(parents: list[str], count: int) -> list[Provenance]:
    """Provenance of ``count`` runs of lineages of their own (captured before the timing)."""
    return [
        capture_provenance(bench_analysis, parameters={"i": i}, parents=[parents[i % len(parents)]])
        for i in range(count)
    ]


def _save(store: Any, provenance: Provenance) -> str:
    uid: str = store.save([{"primary": {"x": 1.0}}], {}, provenance=provenance)
    return uid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 100_000])
    parser.add_argument("--queries", type=int, default=30)
    parser.add_argument("--postgresql", action="store_true")
    parser.add_argument("--scan", action="store_true")
    parser.add_argument("--direct", action="store_true", help="PostgreSQL: no route")
    parser.add_argument("--skip-sqlite", action="store_true")
    args = parser.parse_args()
    with scratch_directory("bas-bench-lineage-") as directory:
        medians: dict[int, dict[str, float]] = {}
        for size in [] if args.skip_sqlite else args.sizes:
            print(f"SQLite (embedded store), {size:,} runs", flush=True)
            with sqlite_store(directory / f"sqlite-{size}") as (store, uri, name):
                medians[size] = bench(store, uri, name, size, args)
        if not args.skip_sqlite:
            _ratios("SQLite", medians, args.sizes)
        if args.postgresql:
            sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
            from postgres import throwaway_cluster

            with throwaway_cluster(databases=()) as server:
                medians = {}
                for size in args.sizes:
                    how = "read in process" if args.direct else "its app's route, in process"
                    print(f"PostgreSQL ({how}), {size:,} runs", flush=True)
                    with postgres_store(
                        directory / f"pg-{size}", server, size, args.direct
                    ) as opened:
                        medians[size] = bench(*opened, size, args)
                _ratios("PostgreSQL", medians, args.sizes)


def _ratios(label: str, medians: dict[int, dict[str, float]], sizes: list[int]) -> None:
    if len(sizes) < 2:
        return
    small, large = min(sizes), max(sizes)
    for query in medians[small]:
        ratio = medians[large][query] / medians[small][query]
        print(f"{label}: {query} at {large:,} / at {small:,} runs: {ratio:.2f}x")


if __name__ == "__main__":
    main()
