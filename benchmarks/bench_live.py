"""Does a live analysis slow data taking? In one process, on the same scan.

    .venv/bin/python benchmarks/bench_live.py [--points 200] [--repeats 5] [--analysis-ms 20]

Anchor: a RunEngine scanning ophyd.sim ``det`` and ``noisy_det`` over ``--points`` points into a
raw catalog (a TiledWriter on an in-process tiled app on SQLite), nothing else subscribed. Then
the same scan with a ``LiveAnalysis`` subscribed, whose analysis (``normalize_and_bin`` plus a
sleep of ``--analysis-ms`` per point, standing in for a slow fit) runs

* on the worker thread (the default): the scan's wall time until ``RE(...)`` returns;
* on the RunEngine thread (``worker=False``): the same.

Printed: medians and ratios against the anchor. With the worker, the analysis's time is off the
scan; without it, it adds up. Repeats are interleaved so drift hits all three alike.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--analysis-ms", type=float, default=20.0)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench-live-") as directory:
        tempfile.tempdir = directory  # ophyd.sim makes temporary directories at import
        from bluesky import RunEngine
        from bluesky.plans import scan
        from bluesky_tiled_plugins.writing.tiled_writer import TiledWriter
        from ophyd.sim import det, motor, noisy_det

        from bluesky_analysis_store import (
            AnalysisStore,
            LiveAnalysis,
            normalize_and_bin,
            raw_runs_only,
        )

        def slow_bin(run, **parameters):
            time.sleep(args.analysis_ms / 1000 * len(run["primary"]))
            return normalize_and_bin(run, **parameters)

        slow_bin.version = "1.0"  # type: ignore[attr-defined]
        parameters = {"detector": "det", "monitor": "noisy_det", "bins": 10}

        with AnalysisStore.open(Path(directory) / "store", raw="raw") as store:
            times: dict[str, list[float]] = {"anchor": [], "worker": [], "inline": []}
            for _ in range(args.repeats):
                for label in times:
                    engine = RunEngine({})
                    engine.subscribe(raw_runs_only(TiledWriter(store.raw)))
                    live = None
                    if label != "anchor":
                        live = LiveAnalysis(
                            slow_bin, store, parameters=parameters, worker=label == "worker"
                        )
                        engine.subscribe(live)
                    began = time.perf_counter()
                    engine(scan([det, noisy_det], motor, -1, 1, args.points))
                    times[label].append(time.perf_counter() - began)
                    if live is not None:
                        live.wait()
                        live.close()
                        assert not live.failures, live.failures
            anchor = statistics.median(times["anchor"])
            print(
                f"scan of {args.points} points, analysis {args.analysis_ms:g} ms/point, "
                f"median of {args.repeats}"
            )
            print(f"{'':<34}{'median s':>10}{'ratio':>8}")
            print(f"{'anchor: no live analysis':<34}{anchor:>10.2f}{1:>8.2f}")
            for label, text in (
                ("worker", "LiveAnalysis, worker (default)"),
                ("inline", "LiveAnalysis, worker=False"),
            ):
                median = statistics.median(times[label])
                print(f"{text:<34}{median:>10.2f}{median / anchor:>8.2f}")
        tempfile.tempdir = None


if __name__ == "__main__":
    sys.exit(main())
