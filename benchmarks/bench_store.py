"""AnalysisStore against its anchors, in one process on the same data.

    .venv/bin/python benchmarks/bench_store.py [--events 1000] [--runs 10000] [--repeats 3]

1. Insert overhead. ``store.save`` end to end (compose: validate, write the HDF5 file, build the
   documents; then insert them) of ``--events`` derived events (three scalars and an 8×8 float32
   image written with ``BAS_HDF5``), against the anchor: replaying the same documents, composed
   once beforehand, into a bare bluesky-tiled-plugins ``TiledWriter``. Each repeat writes into a
   fresh ``CatalogOfBlueskyRuns`` container of one in-process tiled app on SQLite; anchor and ours
   are interleaved. Printed: the medians, the ratio ours / anchor (target ≤ 1.15×) and the
   composition alone (``compose_analysis_run``), so the overhead's breakdown is visible.
2. Query. ``store.derived_from(uid)`` among ``--runs`` analysis runs on SQLite: median and p95 over
   ``--queries`` random raw parents, each result checked against the set computed in Python. The
   runs' containers are created directly (start and stop metadata as TiledWriter stores them,
   start documents shaped like real ones), since replaying full runs would take hours.
3. Import time of the package, and of its first use (``bluesky_analysis_store.AnalysisStore``).

Everything lives in a temporary directory (under ``$TMPDIR``) removed at the end; temporary files
that libraries make go there too. ``--profile`` prints cProfile's top entries of one save.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import cProfile
import gc
import io
import os
import pstats
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bluesky_analysis_store import (
    AnalysisStore,
    Provenance,
    capture_provenance,
    compose_analysis_run,
)
from bluesky_analysis_store.insert._sink import SinkFactory
from bluesky_analysis_store.store._catalog import embedded_tree, in_process_client, runs_container

RAW_PARENT = "0f3c5a8e-9b1d-4c2e-8a7f-1d2e3f4a5b6c"
WRITERS = {"image": "BAS_HDF5"}
PARAMETERS = {
    "threshold": 0.25,
    "roi": [12, 48, 200, 240],
    "background": "rolling-median",
    "window": 15,
    "normalize": True,
    "mask": "/data/masks/detector-2026-11.h5",
    "energy_range_keV": [7.9, 8.3],
    "iterations": 40,
}
ANALYSES = [("reduce_images", "1.2.0"), ("fit_peaks", "0.9.1"), ("integrate_azimuthal", "2.0.0")]


def reduce_images(frames: Any) -> Any:
    """Stand-in analysis whose provenance the benchmark captures."""
    return frames


reduce_images.version = "1.2.0"  # type: ignore[attr-defined]


def derived_events(count: int) -> list[dict[str, dict[str, Any]]]:
    rng = np.random.default_rng(0)
    images = rng.random((count, 8, 8), dtype=np.float32)
    return [
        {
            "primary": {
                "image": images[i],
                "intensity": float(images[i].sum()),
                "x": 0.01 * i,
                "index": i,
            }
        }
        for i in range(count)
    ]


def uuid4(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def percentile(values: list[float], p: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[p - 1]


class Tree:
    """One in-process tiled app on an embedded (SQLite) catalog in ``directory``."""

    def __init__(self, directory: Path) -> None:
        self.files = directory / "files"
        self.context, self.client = in_process_client(embedded_tree(directory))
        self._count = 0

    def new_container(self, prefix: str) -> Any:
        self._count += 1
        return runs_container(self.client, f"{prefix}-{self._count}")

    def new_root(self, name: str) -> Path:
        root = self.files / name
        root.mkdir()
        return root

    def close(self) -> None:
        self.context.close()


def timed(action: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = action()
    return time.perf_counter() - start, result


@dataclass
class Timing:
    """Wall and CPU seconds (every thread of this process: the in-process tiled server too)."""

    wall: float
    cpu: float


def measured(action: Callable[[], Any]) -> tuple[Timing, Any]:
    # start each measurement from a collected heap: a full collection that falls inside one
    # measurement (100 ms and more with tiled's objects around) is noise, not its cost
    gc.collect()
    wall, cpu = time.perf_counter(), time.process_time()
    result = action()
    return Timing(time.perf_counter() - wall, time.process_time() - cpu), result


def replay(subscriber: Callable[[str, dict[str, Any]], Any], documents: list) -> None:
    for name, doc in documents:
        subscriber(name, doc)


MEASURED = ("anchor", "insert", "save", "spooled", "compose")


def bench_insert(tree: Tree, events: int, repeats: int, profile: bool) -> dict[str, Any]:
    data = derived_events(events)
    capture_seconds, provenance = timed(
        lambda: capture_provenance(reduce_images, parents=[RAW_PARENT], parameters=PARAMETERS)
    )
    anchor_root, ours_root, compose_root = (tree.new_root(n) for n in ("anchor", "ours", "compose"))
    # The documents store.save inserts (it composes event pages): the anchor replays those.
    composed = compose_analysis_run(
        data, {}, root=anchor_root, writers=WRITERS, provenance=provenance, event_pages=True
    )
    spool = tree.new_root("spool")  # as a served store has one: every document written ahead
    saved: dict[str, tuple[AnalysisStore, str]] = {}

    def anchor() -> Timing:
        # the bare TiledWriter, configured for our pairs (not behind our document checks)
        writer = SinkFactory(tree.new_container("anchor"))()
        documents = list(composed)  # fresh copies, made outside the timed part
        return measured(lambda: replay(writer, documents))[0]

    def insert() -> Timing:
        # store.insert of the same documents: the insert overhead proper (gate, provenance,
        # idempotence, routing), with the files already written as for the anchor
        store = AnalysisStore(tree.new_container("insert"), anchor_root)
        documents = list(composed)
        return measured(lambda: replay(store.insert, documents))[0]

    def save(spool: Path | None = None) -> Timing:
        store = AnalysisStore(tree.new_container("ours"), ours_root, spool=spool)
        timing, uid = measured(lambda: store.save(data, {}, provenance=provenance, writers=WRITERS))
        saved["spooled" if spool else "save"] = store, uid
        return timing

    def compose() -> Timing:
        return measured(
            lambda: compose_analysis_run(
                data,
                {},
                root=compose_root,
                writers=WRITERS,
                provenance=provenance,
                event_pages=True,
            )
        )[0]

    actions: dict[str, Callable[[], Timing]] = {
        "anchor": anchor,
        "insert": insert,
        "save": save,
        "spooled": lambda: save(spool),
        "compose": compose,
    }
    for action in actions.values():  # warm-up: imports, first requests, page cache
        action()
    timings: dict[str, list[Timing]] = {name: [] for name in MEASURED}
    order = list(MEASURED)
    for repeat in range(repeats):
        # interleaved, each repeat in another order: no measurement always follows another
        for name in order[repeat % len(order) :] + order[: repeat % len(order)]:
            timings[name].append(actions[name]())
    for store, uid in saved.values():  # the saves really landed
        assert store[uid]["primary"]["image"].shape == (events, 8, 8)
    assert not list(spool.glob("*.jsonl"))  # inserted whole: nothing kept in the spool
    result: dict[str, Any] = {"documents": len(composed), "capture": capture_seconds}
    for clock in ("wall", "cpu"):
        anchors = [getattr(t, clock) for t in timings["anchor"]]
        result[clock] = {
            name: statistics.median(getattr(t, clock) for t in timings[name]) for name in MEASURED
        }
        # each repeat's ratio to the anchor measured in the same repeat
        result[f"{clock}_ratios"] = {
            name: [getattr(t, clock) / a for t, a in zip(timings[name], anchors, strict=True)]
            for name in ("insert", "save", "spooled")
        }
    if profile:
        store = AnalysisStore(tree.new_container("profile"), ours_root)
        profiler = cProfile.Profile()
        profiler.runcall(store.save, data, {}, provenance=provenance, writers=WRITERS)
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(30)
        result["profile"] = text.getvalue()
    return result


def start_template(provenance: Provenance, root: Path) -> dict[str, Any]:
    """A real analysis start document (about 1.2 KB, provenance about 0.8 KB)."""
    composed = compose_analysis_run(
        derived_events(1), {}, root=root, writers=WRITERS, provenance=provenance
    )
    return dict(composed.documents[0][1])


def analysis_start(template: dict[str, Any], rng: random.Random, parents: list[str]) -> dict:
    start = copy.deepcopy(template)
    name, version = rng.choice(ANALYSES)
    record = start["provenance"]
    record["code"].update(name=name, version=version, qualname=name)
    record["parents"] = [{"uid": p, "catalog": None, "lineage_hash": None} for p in parents]
    record["parameters"] = {**PARAMETERS, "threshold": round(rng.random(), 3)}
    start.update(
        uid=uuid4(rng),
        time=template["time"] - rng.random() * 3e7,
        analysis_name=name,
        analysis_version=version,
        parent_uids=parents,
        lineage_hash=Provenance.model_validate(record).lineage_hash(),
    )
    return start


def bench_query(tree: Tree, runs: int, pool: int, queries: int) -> dict[str, Any]:
    from tiled.structures.core import Spec

    rng = random.Random(1)
    provenance = capture_provenance(reduce_images, parents=[RAW_PARENT], parameters=PARAMETERS)
    template = start_template(provenance, tree.new_root("template"))
    raw = [uuid4(rng) for _ in range(pool)]
    container = tree.new_container("query")
    expected: dict[str, set[str]] = {uid: set() for uid in raw}
    began = time.perf_counter()
    for n in range(runs):
        parents = rng.sample(raw, rng.randint(1, 3))
        start = analysis_start(template, rng, parents)
        stop = {
            "uid": uuid4(rng),
            "run_start": start["uid"],
            "time": start["time"] + 1.0,
            "exit_status": "success",
            "reason": "",
            "num_events": {"primary": 100},
        }
        container.create_container(
            key=start["uid"],
            metadata={"start": start, "stop": stop},
            specs=[Spec("BlueskyRun", version="3.0")],
        )
        for parent in parents:
            expected[parent].add(start["uid"])
        if (n + 1) % 1000 == 0:
            elapsed = time.perf_counter() - began
            print(f"  populated {n + 1} runs in {elapsed:.0f} s", flush=True)
    populate = time.perf_counter() - began

    store = AnalysisStore(container, tree.files)
    assert len(store) == runs
    asked = rng.sample(raw, queries)
    store.derived_from(asked[0])  # warm-up
    times, found = [], 0
    for parent in asked:
        seconds, children = timed(lambda parent=parent: store.derived_from(parent))
        assert len(children) == len(set(children)), f"{parent}: duplicates in {children}"
        assert set(children) == expected[parent], f"{parent}: {children} != {expected[parent]}"
        times.append(seconds)
        found += len(children)
    return {
        "populate": populate,
        "median": statistics.median(times),
        "p95": percentile(times, 95),
        "mean_children": found / queries,
    }


def import_seconds(statement: str, repeats: int = 5) -> float:
    code = f"import time; t = time.perf_counter(); {statement}; print(time.perf_counter() - t)"
    runs = [
        float(
            subprocess.run(
                [sys.executable, "-c", code], capture_output=True, text=True, check=True
            ).stdout
        )
        for _ in range(repeats)
    ]
    return statistics.median(runs)


def _ratio(values: list[float]) -> str:
    return f"{statistics.median(values):.2f}x ({min(values):.2f}x to {max(values):.2f}x)"


@contextlib.contextmanager
def scratch_directory(prefix: str) -> Iterator[Path]:
    """A temporary directory, removed at the end, with ``TMPDIR`` pointing inside it: whatever a
    library puts in a temporary file goes in there too, and is removed with it."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        scratch = Path(tmp) / "tmp"
        scratch.mkdir()
        saved = os.environ.get("TMPDIR"), tempfile.tempdir
        os.environ["TMPDIR"] = tempfile.tempdir = str(scratch)
        try:
            yield Path(tmp)
        finally:
            if saved[0] is None:
                os.environ.pop("TMPDIR")
            else:
                os.environ["TMPDIR"] = saved[0]
            tempfile.tempdir = saved[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=10000)
    parser.add_argument("--raw-pool", type=int, default=2000)
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--profile", action="store_true", help="cProfile one save")
    parser.add_argument("--skip-query", action="store_true")
    args = parser.parse_args()

    with scratch_directory("bench-store-") as tmp:
        insert_tree = Tree(Path(tmp) / "insert")
        try:
            r = bench_insert(insert_tree, args.events, args.repeats, args.profile)
        finally:
            insert_tree.close()
        print(
            f"insert: {args.events} events ({r['documents']} documents), {args.repeats} "
            "repeats, interleaved in rotating order; medians, and the median of each "
            "repeat's ratio to the anchor of the same repeat (min to max)"
        )
        for clock, title in (("wall", "wall time"), ("cpu", "CPU time of the process")):
            seconds, ratios = r[clock], r[f"{clock}_ratios"]
            print(f"  {title}")
            print(f"    anchor TiledWriter, insert only  : {seconds['anchor']:.3f} s")
            print(
                f"    store.insert, same documents     : {seconds['insert']:.3f} s, "
                f"{_ratio(ratios['insert'])} (target <= 1.10x)"
            )
            print(
                f"    store.save end to end            : {seconds['save']:.3f} s, "
                f"{_ratio(ratios['save'])}"
            )
            print(f"      of which compose_analysis_run  : {seconds['compose']:.3f} s")
            print(
                f"    store.save with a spool (served) : {seconds['spooled']:.3f} s, "
                f"{_ratio(ratios['spooled'])}"
            )
        print(f"  (capture_provenance, once, not in the save: {r['capture']:.3f} s)")
        if "profile" in r:
            print(r["profile"])

        if not args.skip_query:
            query_tree = Tree(Path(tmp) / "query")
            try:
                q = bench_query(query_tree, args.runs, args.raw_pool, args.queries)
            finally:
                query_tree.close()
            print(
                f"query: derived_from among {args.runs} runs "
                f"({args.raw_pool} raw parents, {q['mean_children']:.1f} children each "
                f"on average), {args.queries} queries, all results checked"
            )
            print(f"  populated in {q['populate']:.0f} s ({args.runs / q['populate']:.0f} runs/s)")
            print(f"  median {q['median'] * 1e3:.1f} ms, p95 {q['p95'] * 1e3:.1f} ms")

    plain = import_seconds("import bluesky_analysis_store")
    first_use = import_seconds(
        "import bluesky_analysis_store; bluesky_analysis_store.AnalysisStore"
    )
    print(f"import bluesky_analysis_store: {plain:.3f} s (target <= 0.3 s)")
    print(f"import + bluesky_analysis_store.AnalysisStore: {first_use:.3f} s")


if __name__ == "__main__":
    main()
