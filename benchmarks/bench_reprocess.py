"""Reprocessing a campaign on Dask (issue 14): scaling, rerun, throughput.

    .venv/bin/python benchmarks/bench_reprocess.py [--repeats 3] [--runs 40] [--small-runs 100]
        [--seconds 0.6] [--uncached] [--skip-cpu] [--skip-small] [--requests N]

The store is embedded (a directory, reached through its local server, which every worker
shares); raw runs are event-model documents (a ``primary`` stream of 10 events: ``det``,
``motor``) inserted with bluesky-tiled-plugins' ``TiledWriter(store.raw)`` into a template
store, copied for every measurement (each starts on the same raw catalog and nothing else; its
local server is started, untimed, before the clock starts, as at a beamline where it is up).

1. CPU-bound: ``bench_reprocess_analyses:burn`` (pure Python, ``--seconds`` per run, calibrated
   here) over ``--runs`` raw runs, ``reprocess(workers=2)`` against ``workers=1``, the two taking
   turns in a rotating order; whole wall time of ``reprocess`` (cluster start, planning,
   tasks). Target: 1 worker / 2 workers ≥ 1.8.
2. Rerun: the same campaign again on the store the first run filled (everything stored: no
   Dask). Target: ≤ 5 % of the first run's time.
3. Throughput: ``bench_reprocess_analyses:trivial`` (read ``det``, keep its mean) over
   ``--small-runs`` raw runs, ``reprocess(workers=2)`` against the anchor, a plain Python loop
   in this process over the same store: open it, then per raw run read it, run the analysis,
   and ``store.save`` with the same provenance (code, environment, the parent's start). Runs/s
   of the whole (the store's opening included in both); then the planning (task graph and
   one search per analysis) and the worker's lookups (the parents' start documents and
   ``with_lineage``) per task, in this process.
4. ``--requests N``: the plain loop's requests over N runs by kind, with the local server's CPU
   time spent on each kind (where a small run's time goes).

Bytecode: unless ``--uncached``, the script runs itself again with ``PYTHONPYCACHEPREFIX`` in
its scratch directory (and without ``PYTHONDONTWRITEBYTECODE``), so that this process, the Dask
workers it spawns and the local servers all read cached bytecode; a first untimed round warms
it. Everything lives in a temporary directory removed at the end; every local server started is
stopped.
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from bench_reprocess_analyses import burn
from bench_store import scratch_directory

CPU_PLAN = "bench_cpu"
SMALL_PLAN = "bench_small"

CPU_CAMPAIGN = """
name: bench-cpu
procedures:
  burned:
    analysis: bench_reprocess_analyses:burn
    version: "1"
    parameters: {{work: {work}}}
    inputs: {{raw: {{plan_name: {plan}}}}}
"""

SMALL_CAMPAIGN = """
name: bench-small
procedures:
  summed:
    analysis: bench_reprocess_analyses:trivial
    version: "1"
    inputs: {{raw: {{plan_name: {plan}}}}}
"""


def calibrate(seconds: float) -> int:
    """Iterations of :func:`burn`'s loop that take about ``seconds`` here."""

    class Run(dict[str, Any]):
        pass

    class Stream:
        def read(self) -> dict[str, list[float]]:
            return {"det": [1.0, 2.0]}

    run = Run(primary=Stream())
    work = 200_000
    while True:
        start = time.process_time()
        burn(run, work=work)
        took = time.process_time() - start
        if took > 0.2:
            return int(work * seconds / took)
        work *= 2


def fill_raw(store: Any, plan: str, count: int) -> list[str]:
    """``count`` raw runs of ``plan``: event-model documents through ``TiledWriter``."""
    import numpy as np
    from bluesky_tiled_plugins import TiledWriter
    from event_model import compose_run

    writer = TiledWriter(store.raw)
    rng = np.random.default_rng(len(plan))
    keys = {
        key: {"dtype": "number", "shape": [], "source": f"sim:{key}"} for key in ("det", "motor")
    }
    uids = []
    for i in range(count):
        run = compose_run(metadata={"plan_name": plan, "scan_id": i + 1})
        writer("start", run.start_doc)
        stream = run.compose_descriptor(name="primary", data_keys=keys)
        writer("descriptor", stream.descriptor_doc)
        for j in range(10):
            now = time.time()
            writer(
                "event",
                stream.compose_event(
                    data={"det": float(rng.random()), "motor": j / 10},
                    timestamps={"det": now, "motor": now},
                    seq_num=j + 1,
                ),
            )
        writer("stop", run.compose_stop())
        uids.append(run.start_doc["uid"])
    return uids


class Stores:
    """Copies of a template store, each with its local server started (untimed)."""

    def __init__(self, scratch: Path, runs: int, small_runs: int) -> None:
        from bluesky_analysis_store import AnalysisStore
        from bluesky_analysis_store.store._local_server import stop

        self.scratch = scratch
        self.template = scratch / "template"
        self.made: list[Path] = []
        with AnalysisStore.open(self.template, raw="raw", local_server=True) as store:
            self.cpu_uids = fill_raw(store, CPU_PLAN, runs)
            self.small_uids = fill_raw(store, SMALL_PLAN, small_runs)
        stop(self.template)

    def copy(self, name: str) -> Path:
        from bluesky_analysis_store import AnalysisStore

        directory = self.scratch / name
        shutil.copytree(self.template, directory)
        self.made.append(directory)
        with AnalysisStore.open(directory, raw="raw", local_server=True):
            pass  # starts its local server: up before the clock starts
        return directory

    def drop(self, directory: Path) -> None:
        from bluesky_analysis_store.store._local_server import stop

        stop(directory)
        shutil.rmtree(directory)
        self.made.remove(directory)

    def close(self) -> None:
        from bluesky_analysis_store.store._local_server import stop

        for directory in [self.template, *self.made]:
            stop(directory)


def server_cpu(directory: Path) -> float:
    """CPU seconds the store's local server has used so far (Linux ``/proc``; 0 elsewhere)."""
    from bluesky_analysis_store.store._local_server import read_state

    state = read_state(directory)
    try:
        fields = Path(f"/proc/{state.pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (AttributeError, OSError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def timed(function: Callable[[], Any]) -> tuple[float, Any]:
    gc.collect()
    start = time.perf_counter()
    result = function()
    return time.perf_counter() - start, result


def _check(report: Any, expected: dict[str, int]) -> None:
    counts: dict[str, int] = {}
    for outcome in report.outcomes.values():
        counts[outcome.status] = counts.get(outcome.status, 0) + 1
    if counts != expected:
        raise RuntimeError(f"unexpected outcomes {counts} (expected {expected})")


def spread(values: list[float], fmt: str = "{:.2f}") -> str:
    return f"{fmt.format(statistics.median(values))} ({fmt.format(min(values))}-" + (
        f"{fmt.format(max(values))})"
    )


def cpu_bound(stores: Stores, repeats: int, work: int, runs: int) -> None:
    from bluesky_analysis_store import reprocess

    config = stores.scratch / "cpu.yaml"
    config.write_text(CPU_CAMPAIGN.format(work=work, plan=CPU_PLAN))
    first: dict[int, list[float]] = {1: [], 2: []}
    rerun: dict[int, list[float]] = {1: [], 2: []}
    ratios: list[float] = []
    rerun_share: list[float] = []
    for repeat in range(repeats + 1):  # the first round warms the bytecode, untimed
        order = [1, 2] if repeat % 2 else [2, 1]
        times = {}
        for workers in order:
            directory = stores.copy(f"cpu-{repeat}-{workers}")
            cpu = server_cpu(directory)
            campaign = partial(reprocess, config, directory, raw="raw", workers=workers)
            took, report = timed(campaign)
            _check(report, {"ran": runs})
            served = (server_cpu(directory) - cpu) / runs
            again, report = timed(campaign)
            _check(report, {"stored": runs})
            stores.drop(directory)
            times[workers] = took
            print(
                f"  {'warm-up' if not repeat else f'repeat {repeat}'}: {workers} worker(s) "
                f"{took:.2f} s, rerun {again:.2f} s ({again / took:.1%}); "
                f"local server CPU {1000 * served:.0f} ms/run",
                flush=True,
            )
            if repeat:
                first[workers].append(took)
                rerun[workers].append(again)
                rerun_share.append(again / took)
        if repeat:
            ratios.append(times[1] / times[2])
    print(f"\n1. CPU-bound, {runs} runs, {repeats} repeats: median (min-max)")
    for workers in (1, 2):
        print(f"  {workers} worker(s): {spread(first[workers])} s")
    print(f"  speed-up 2 workers vs 1 (per repeat): {spread(ratios)}x   target >= 1.8x")
    print("\n2. rerun, everything stored")
    for workers in (1, 2):
        print(f"  after {workers} worker(s): {spread(rerun[workers])} s")
    print(f"  rerun / first run: {spread([100 * r for r in rerun_share], '{:.1f}')} %   <= 5 %")


def plain_loop(
    directory: Path, uids: list[str], opened: Callable[[Any], None] | None = None
) -> None:
    """The anchor: what a script does with ``store.save`` alone, the same work per run
    (``opened`` is called with the store once it is open)."""
    from bluesky_analysis_store import AnalysisStore
    from bluesky_analysis_store.provenance._capture import capture_environment, describe_parent
    from bluesky_analysis_store.provenance._provenance import Provenance
    from bluesky_analysis_store.reprocessing._analyses import find_analysis

    analysis = find_analysis("bench_reprocess_analyses:trivial")
    with AnalysisStore.open(directory, raw="raw", local_server=True) as store:
        if opened is not None:
            opened(store)
        for uid in uids:
            run = store.raw[uid]
            provenance = Provenance(
                code=analysis.code,
                environment=capture_environment(),
                parents=(describe_parent(run),),
                parameters={},
            )
            data_dicts, md = analysis(run, {})
            store.save(data_dicts, md, provenance=provenance)


def request_costs(stores: Stores, runs: int) -> None:
    """4. Where a small run's time goes: the plain loop's requests by kind, with the local
    server's CPU time over each (``/proc``; the loop makes one request at a time, so the
    server's CPU between a request and its reply is that request's)."""
    directory = stores.copy("requests")
    uids = stores.small_uids[:runs]
    counts: dict[str, int] = {}
    cpu: dict[str, float] = {}
    started: list[float] = []

    def before(request: Any) -> None:
        started.append(server_cpu(directory))

    def after(response: Any) -> None:
        path = response.request.url.path.split("/")
        kind = f"{response.request.method} /{'/'.join(path[3:5])}/... ({response.status_code})"
        counts[kind] = counts.get(kind, 0) + 1
        cpu[kind] = cpu.get(kind, 0.0) + server_cpu(directory) - started.pop()

    def hooked(store: Any) -> None:
        hooks = store.runs.context.http_client.event_hooks
        hooks["request"].append(before)
        hooks["response"].append(after)

    total = server_cpu(directory)
    took, _ = timed(partial(plain_loop, directory, uids, hooked))
    total = server_cpu(directory) - total
    stores.drop(directory)
    print(
        f"\n4. the plain loop's requests, {runs} runs ({runs / took:.2f} runs/s; local server "
        f"CPU {1000 * total / runs:.0f} ms/run):"
    )
    for kind in sorted(counts, key=lambda k: -cpu[k]):
        print(
            f"  {kind}: {counts[kind] / runs:.1f} per run, "
            f"{1000 * cpu[kind] / counts[kind]:.0f} ms of server CPU each"
        )


def lookups_per_task(directory: Path, config: Path) -> tuple[float, float, int]:
    """Seconds per task of planning (graph and one search per analysis) and of a worker's
    lookups (each parent read by key, with its start document; ``with_lineage``), on a store
    where all is stored."""
    from bluesky_analysis_store import AnalysisStore
    from bluesky_analysis_store.insert._runs import stored_run
    from bluesky_analysis_store.reprocessing._procedures import load_campaign
    from bluesky_analysis_store.reprocessing._status import resolve_tasks
    from bluesky_analysis_store.reprocessing._tasks import build_task_graph

    with AnalysisStore.open(directory, raw="raw", local_server=True) as store:
        campaign = load_campaign(config)
        planning, (graph, states) = timed(
            lambda: (g := build_task_graph(campaign, store.raw), resolve_tasks(g, store.runs))
        )

        def lookups() -> None:  # as a worker does before it runs the analysis
            for state in states.values():
                for uid in state.task.raw_parents:
                    dict(stored_run(store.raw, uid).metadata["start"])
                store.with_lineage(str(state.lineage_hash))

        looking, _ = timed(lookups)
    return planning / len(graph.tasks), looking / len(graph.tasks), len(graph.tasks)


def throughput(stores: Stores, repeats: int, runs: int) -> None:
    from bluesky_analysis_store import reprocess

    config = stores.scratch / "small.yaml"
    config.write_text(SMALL_CAMPAIGN.format(plan=SMALL_PLAN))
    rates: dict[str, list[float]] = {"plain loop": [], "reprocess, 2 workers": []}
    server: dict[str, list[float]] = {name: [] for name in rates}
    ratios: list[float] = []
    planning: list[float] = []
    looking: list[float] = []
    for repeat in range(repeats + 1):
        names = list(rates) if repeat % 2 else list(rates)[::-1]
        got = {}
        for name in names:
            directory = stores.copy(f"small-{repeat}-{len(got)}")
            cpu = server_cpu(directory)
            if name == "plain loop":
                took, _ = timed(partial(plain_loop, directory, stores.small_uids))
            else:
                took, report = timed(partial(reprocess, config, directory, raw="raw", workers=2))
                _check(report, {"ran": runs})
                per_plan, per_look, _ = lookups_per_task(directory, config)
                if repeat:
                    planning.append(per_plan)
                    looking.append(per_look)
            served = (server_cpu(directory) - cpu) / runs
            stores.drop(directory)
            got[name] = runs / took
            print(
                f"  {'warm-up' if not repeat else f'repeat {repeat}'}: {name} "
                f"{got[name]:.2f} runs/s ({took:.1f} s; "
                f"local server CPU {1000 * served:.0f} ms/run)",
                flush=True,
            )
            if repeat:
                rates[name].append(got[name])
                server[name].append(served)
        if repeat:
            ratios.append(got["reprocess, 2 workers"] / got["plain loop"])
    print(f"\n3. throughput, trivial analysis, {runs} runs, {repeats} repeats: runs/s")
    for name, values in rates.items():
        cpu_ms = spread([1000 * v for v in server[name]], "{:.0f}")
        print(f"  {name}: {spread(values)} runs/s; local server CPU {cpu_ms} ms/run")
    print(f"  ratio reprocess / plain loop (per repeat): {spread(ratios)}x   target >= 2x")
    print(f"  planning per task: {spread([1000 * p for p in planning], '{:.1f}')} ms")
    print(f"  worker lookups per task: {spread([1000 * p for p in looking], '{:.1f}')} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--small-runs", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=0.6)
    parser.add_argument("--uncached", action="store_true")
    parser.add_argument("--skip-cpu", action="store_true")
    parser.add_argument("--skip-small", action="store_true")
    parser.add_argument("--requests", type=int, default=0, help="4. breakdown over N runs")
    parser.add_argument("--scratch", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not args.uncached and args.scratch is None:  # again, with bytecode cached
        with scratch_directory("bas-bench-reprocess-") as scratch:
            env = {k: v for k, v in os.environ.items() if not k.startswith("BAS_")}
            env.pop("PYTHONDONTWRITEBYTECODE", None)
            env["PYTHONPYCACHEPREFIX"] = str(scratch / "pyc")
            command = [sys.executable, *sys.argv, "--scratch", str(scratch)]
            sys.exit(subprocess.run(command, env=env).returncode)
    with scratch_directory("bas-bench-reprocess-") as tmp:
        scratch = Path(args.scratch) if args.scratch else tmp
        work = calibrate(args.seconds)
        load = os.getloadavg()
        cached = f"cached in {sys.pycache_prefix}" if sys.pycache_prefix else "not cached"
        print(
            f"bytecode: {cached}; cores {os.cpu_count()}; "
            f"load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; "
            f"burn: {work} iterations ~ {args.seconds} s",
            flush=True,
        )
        stores = Stores(scratch, args.runs, args.small_runs)
        try:
            if not args.skip_cpu:
                cpu_bound(stores, args.repeats, work, args.runs)
            if not args.skip_small:
                throughput(stores, args.repeats, args.small_runs)
            if args.requests:
                request_costs(stores, min(args.requests, args.small_runs))
        finally:
            stores.close()
        load = os.getloadavg()
        print(f"load at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


if __name__ == "__main__":
    main()
