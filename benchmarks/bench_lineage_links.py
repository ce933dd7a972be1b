"""What writing a run's lineage into tiled's graph of links costs a save (issue 15).

The store's tree writes each run's ``prov:wasDerivedFrom`` links server-side when the run's
container is created (``store/_lineage_links.py``): no request, one more transaction. Anchor:
the same small saves with that write replaced by a no-op, in the same process and store,
blocks taking turns (on, off, on, off...). Prints the median time per save of each and the
median of the per-round ratios, with their spread, and the requests per save counted by tiled.

    .venv/bin/python benchmarks/bench_lineage_links.py --rounds 6 --runs 20
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np


def analysis(data: Any) -> Any:
    return data


analysis.version = "1.0"  # type: ignore[attr-defined]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--runs", type=int, default=20, help="saves per block")
    args = parser.parse_args()

    import os

    os.environ["BAS_LOCAL_SERVER"] = "0"  # the store's app in this process: its cost is ours
    from bluesky_analysis_store import AnalysisStore, capture_provenance
    from bluesky_analysis_store.store import _lineage_links

    original = _lineage_links.write_or_warn
    inside: list[float] = []  # the write's own time, per save

    async def real(*arguments: Any) -> None:
        began = time.perf_counter()
        await original(*arguments)
        inside.append(time.perf_counter() - began)

    async def nothing(*_: Any) -> None:
        return None

    with tempfile.TemporaryDirectory() as directory, AnalysisStore.open(Path(directory)) as store:
        parent = "0f3c5a8e-9b1d-4c2e-8a7f-1d2e3f4a5b6c"
        counter = [0]

        def block() -> float:
            nonlocal parent
            began = time.perf_counter()
            for _ in range(args.runs):
                counter[0] += 1
                provenance = capture_provenance(
                    analysis, parents=[parent], parameters={"i": counter[0]}
                )
                data = [{"primary": {"x": float(counter[0]), "y": np.arange(4.0)}}]
                parent = store.save(data, {}, provenance=provenance)
            return (time.perf_counter() - began) / args.runs

        block()  # warm: imports, first inserts
        on, off = [], []
        for round_ in range(args.rounds):
            for enabled in (round_ % 2 == 0, round_ % 2 == 1):
                _lineage_links.write_or_warn = real if enabled else nothing  # type: ignore[assignment]
                (on if enabled else off).append(block())
        _lineage_links.write_or_warn = original  # type: ignore[assignment]

        from tiled.client import record_history

        requests = {}
        for enabled in (True, False):
            _lineage_links.write_or_warn = original if enabled else nothing  # type: ignore[assignment]
            with record_history() as history:
                block_one = capture_provenance(
                    analysis, parents=[parent], parameters={"i": -1 - enabled}
                )
                store.save([{"primary": {"x": 0.0}}], {}, provenance=block_one)
            requests[enabled] = len(history.requests)
        _lineage_links.write_or_warn = original  # type: ignore[assignment]

    ratios = [a / b for a, b in zip(on, off, strict=True)]
    print(f"save with links:    median {statistics.median(on) * 1e3:.1f} ms per save")
    print(f"save without links: median {statistics.median(off) * 1e3:.1f} ms per save")
    print(
        f"ratio with/without: median {statistics.median(ratios):.3f} "
        f"(min {min(ratios):.3f}, max {max(ratios):.3f}, {args.rounds} rounds of {args.runs})"
    )
    print(
        f"the write itself: median {statistics.median(inside) * 1e3:.2f} ms per save "
        f"(p90 {statistics.quantiles(inside, n=10)[-1] * 1e3:.2f} ms, {len(inside)} saves)"
    )
    print(f"requests per save: {requests[True]} with links, {requests[False]} without")


if __name__ == "__main__":
    main()
