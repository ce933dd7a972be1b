"""Small saves (issue 13, part 4): file sizes, capture_provenance, runs per second.

    .venv/bin/python benchmarks/bench_small_saves.py [--runs 200] [--repeats 3] [--skip-saves]
        [--only-saves] [--stores embedded,http]

1. File sizes. ``compose_analysis_run`` of 10 events of a 32-value float32 array with
   ``BAS_HDF5``, the same as a 32-row one-column table with ``BAS_TABLE_HDF5``, and 20,000
   events of the array (a big run, 2.56 MB of data): bytes on disk against bytes of data.
2. ``capture_provenance``. Anchor: of an installed function (``numpy.mean``); measured: of a
   function defined in this script (module ``__main__``, like a notebook's). ``--calls`` calls
   of each per repeat, interleaved in rotating order; the median of each repeat's ratio.
3. Saves. ``store.save`` of ``--runs`` small runs (10 events: the array and a scalar), against
   the anchor: a bare bluesky-tiled-plugins ``TiledWriter`` (default options, one writer fed
   every run) replaying the same kind of runs' documents, composed beforehand (files already
   written). ``--stores embedded,http``: an embedded store (an in-process tiled app on SQLite,
   a fresh container per repeat), and a real ``bas serve`` subprocess on 127.0.0.1 (the store
   opened as a user opens it, with its spool; both write into its analysis container). Anchor
   and ours take turns run by run; runs/s per repeat, ratio ours / anchor; requests per run
   counted with tiled's ``record_history``.

Everything lives in a temporary directory (under ``$TMPDIR``) removed at the end.
"""

from __future__ import annotations

import argparse
import gc
import os
import secrets
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from bench_store import RAW_PARENT, Tree, measured, replay, scratch_directory
from tiled.client import record_history

from bluesky_analysis_store import AnalysisStore, capture_provenance, compose_analysis_run
from bluesky_analysis_store.store._catalog import runs_container


def analyse(values: Any) -> Any:
    """Stand-in analysis defined in a script: no installed distribution provides it."""
    return values


analyse.version = "0.1"  # type: ignore[attr-defined]


def small_events(count: int, seed: int = 0) -> list[dict[str, dict[str, Any]]]:
    rng = np.random.default_rng(seed)
    spectra = rng.random((count, 32), dtype=np.float32)
    return [
        {"primary": {"spectrum": spectra[i], "total": float(spectra[i].sum())}}
        for i in range(count)
    ]


def table_events(count: int) -> list[dict[str, dict[str, Any]]]:
    rng = np.random.default_rng(0)
    return [
        {"primary": {"peaks": pd.DataFrame({"height": rng.random(32, dtype=np.float32)})}}
        for _ in range(count)
    ]


def file_sizes(directory: Path) -> dict[str, Any]:
    provenance = capture_provenance(analyse, parents=[RAW_PARENT])
    cases = {
        "10 x 32 float32, BAS_HDF5": (small_events(10), {"spectrum": "BAS_HDF5"}),
        "10 x 32-row float32 table, BAS_TABLE_HDF5": (
            table_events(10),
            {"peaks": "BAS_TABLE_HDF5"},
        ),
        "20,000 x 32 float32, BAS_HDF5": (small_events(20_000), {"spectrum": "BAS_HDF5"}),
    }
    result = {}
    for n, (label, (data, writers)) in enumerate(cases.items()):
        root = directory / f"sizes-{n}"
        root.mkdir()
        run = compose_analysis_run(data, {}, root=root, writers=writers, provenance=provenance)
        (path,) = run.files
        key = next(iter(writers))
        value = data[0]["primary"][key]
        frame_bytes = (
            value.to_records(index=False).nbytes if hasattr(value, "columns") else value.nbytes
        )
        result[label] = (os.path.getsize(path), frame_bytes * len(data))
    return result


def bench_capture(calls: int, repeats: int) -> dict[str, Any]:
    actions: dict[str, Callable[[], Any]] = {
        "installed": lambda: capture_provenance(np.mean, parents=[RAW_PARENT]),
        "script": lambda: capture_provenance(analyse, parents=[RAW_PARENT]),
    }
    first = {name: measured(action)[0].wall for name, action in actions.items()}  # first call
    times: dict[str, list[float]] = {name: [] for name in actions}
    order = list(actions)
    for repeat in range(repeats):
        for name in order[repeat % 2 :] + order[: repeat % 2]:
            samples = []
            for _ in range(calls):
                start = time.perf_counter()
                actions[name]()
                samples.append(time.perf_counter() - start)
            times[name].append(statistics.median(samples))
    ratios = [s / i for s, i in zip(times["script"], times["installed"], strict=True)]
    return {
        "first": first,
        "median": {n: statistics.median(t) for n, t in times.items()},
        "ratios": ratios,
    }


class Served:
    """A real ``bas serve`` subprocess on a free loopback port (its own store directory, a
    random key), and a tiled client of it; :meth:`close` stops it."""

    def __init__(self, directory: Path) -> None:
        from tiled.client import from_uri

        self.directory = directory
        self.key = secrets.token_hex(32)
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        env = {k: v for k, v in os.environ.items() if not k.startswith("BAS_")}
        env["BAS_API_KEY"] = self.key
        directory.parent.mkdir(parents=True, exist_ok=True)
        self.log = directory.parent / "serve.log"
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "bluesky_analysis_store.cli",
                    "serve",
                    str(directory),
                    "--port",
                    str(port),
                ],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.uri = f"http://127.0.0.1:{port}"
        for _ in range(1800):
            if self.process.poll() is not None:
                raise RuntimeError(f"bas serve exited: {self.log.read_text()}")
            try:
                with urllib.request.urlopen(f"{self.uri}/healthz", timeout=1):
                    break
            except OSError:
                time.sleep(0.1)
        else:
            self.close()
            raise RuntimeError("bas serve did not start")
        self.client = from_uri(self.uri, api_key=self.key)

    def close(self) -> None:
        self.client.context.close()
        self.process.terminate()
        self.process.wait(timeout=60)


def bench_saves(runs: int, repeats: int, tmp: Path, http: bool) -> dict[str, Any]:
    """``store.save`` against a bare TiledWriter on one store, embedded or served."""
    from bluesky_tiled_plugins.writing.tiled_writer import TiledWriter

    def provenances(repeat: int, who: str) -> list[Any]:
        # each run its own lineage: a save of a lineage already saved writes nothing (and over
        # HTTP every repeat, ours and the anchor's, goes into the same container)
        return [
            capture_provenance(
                analyse, parents=[RAW_PARENT], parameters={"run": n, "repeat": repeat, "by": who}
            )
            for n in range(runs)
        ]

    data = [small_events(10, seed=n) for n in range(runs)]
    served = Served(tmp / "served") if http else None
    tree = None if http else Tree(tmp / "saves")
    try:
        if served is not None:
            files = served.directory / "files"
            # both into the store's one analysis container, under the server's rules
            analysis = runs_container(served.client)
            anchor_root = files / "anchor"
            anchor_root.mkdir()

            def anchor_container() -> Any:
                return analysis

            def our_store(repeat: int) -> AnalysisStore:
                # as a user opens it: root the server reads, its spool ROOT/.bas-spool
                return AnalysisStore.open(served.uri, api_key=served.key, root=files)

        else:
            assert tree is not None
            anchor_root = tree.new_root("anchor")

            def anchor_container() -> Any:
                return tree.new_container("anchor")

            def our_store(repeat: int) -> AnalysisStore:
                return AnalysisStore(tree.new_container("ours"), tree.new_root(f"ours-{repeat}"))

        requests = {"anchor": 0, "save": 0}
        times: dict[str, list[float]] = {"anchor": [], "save": []}
        for repeat in range(repeats):
            container = anchor_container()
            composed = [  # what store.save composes, beforehand: files written
                list(compose_analysis_run(d, {}, root=anchor_root, provenance=p, event_pages=True))
                for d, p in zip(data, provenances(repeat, "anchor"), strict=True)
            ]
            writer = TiledWriter(container)  # bare, default options, fed every run
            store = our_store(repeat)
            before = len(store)
            ours = provenances(repeat, "ours")
            actions: dict[str, Callable[[int], Any]] = {
                "anchor": lambda i, w=writer, c=composed: replay(w, c[i]),
                "save": lambda i, s=store, p=ours: s.save(data[i], {}, provenance=p[i]),
            }
            # run by run, in turn (the order swapped every run): a machine whose load drifts
            # weighs on both alike
            spent = {"anchor": 0.0, "save": 0.0}
            order = list(actions)
            gc.collect()
            for i in range(runs):
                for name in order[i % 2 :] + order[: i % 2]:
                    with record_history() as history:
                        started = time.perf_counter()
                        actions[name](i)
                        spent[name] += time.perf_counter() - started
                    requests[name] += len(history.requests)
            # every save wrote a run (over HTTP the anchor's go into the same container)
            assert len(store) == before + runs * (2 if http else 1)
            store.close()
            for name, seconds in spent.items():
                times[name].append(seconds)
    finally:
        if served is not None:
            served.close()
        if tree is not None:
            tree.close()
    # runs/s ours over runs/s anchor = anchor seconds over ours
    ratios = [a / s for a, s in zip(times["anchor"], times["save"], strict=True)]
    return {
        "seconds": {n: statistics.median(t) for n, t in times.items()},
        "ratios": ratios,
        "requests": {n: r / runs / repeats for n, r in requests.items()},
    }


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f}x ({min(values):.2f}x to {max(values):.2f}x)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--calls", type=int, default=20, help="capture calls per repeat")
    parser.add_argument("--skip-saves", action="store_true")
    parser.add_argument("--only-saves", action="store_true", help="skip sizes and capture")
    parser.add_argument(
        "--stores",
        default="embedded,http",
        help="comma-separated: embedded (in-process app), http (a bas serve subprocess)",
    )
    args = parser.parse_args()

    with scratch_directory("bench-small-") as tmp:
        if not args.only_saves:
            print("file sizes (bytes on disk / bytes of data):")
            for label, (size, data) in file_sizes(Path(tmp)).items():
                print(f"  {label:45s}: {size:>10,d} B / {data:>10,d} B")

            c = bench_capture(args.calls, args.repeats)
            print(
                f"capture_provenance: {args.repeats} repeats of {args.calls} calls each, "
                "interleaved; medians"
            )
            installed = c["median"]["installed"]
            print(f"  anchor, installed function (numpy.mean): {installed * 1e3:.1f} ms")
            print(
                f"  function defined in a script (__main__): "
                f"{c['median']['script'] * 1e3:.1f} ms, {_spread(c['ratios'])}"
            )
            print(
                f"  first calls: installed {c['first']['installed'] * 1e3:.1f} ms, "
                f"script {c['first']['script'] * 1e3:.1f} ms"
            )

        if args.skip_saves:
            return
        for where in args.stores.split(","):
            s = bench_saves(args.runs, args.repeats, Path(tmp) / where, http=where == "http")
            anchor, ours = s["seconds"]["anchor"], s["seconds"]["save"]
            requests = s["requests"]
            print(
                f"saves, {where}: {args.runs} runs of 10 events, {args.repeats} repeats, "
                "interleaved"
            )
            print(
                f"  anchor, bare TiledWriter replaying : {args.runs / anchor:.2f} runs/s, "
                f"{requests['anchor']:.1f} requests/run"
            )
            print(
                f"  store.save end to end             : {args.runs / ours:.2f} runs/s, "
                f"{requests['save']:.1f} requests/run, {_spread(s['ratios'])} of the anchor's "
                "runs/s (target >= 1.0x)"
            )


if __name__ == "__main__":
    main()
