"""Several processes on one embedded store through its local server (issue 13, part 2).

    .venv/bin/python benchmarks/bench_processes.py [--repeats 5] [--runs 30]

1. Opening. Wall time of a child process that opens the store and counts its runs:
   ``AnalysisStore.open(D, read_only=True)`` while the store's local server runs (what every
   process after the first does), the same in process (``local_server=False``, what every
   process paid before), and the anchor ``python -c "import bluesky, ophyd.sim, tiled.client"``;
   interleaved in a rotating order. The first open of an idle store (which starts the server)
   is timed once per repeat too.
2. Saving. ``--runs`` small runs (10 events: a 32-value array and a scalar), each a lineage of
   its own: by one process in process (the anchor: the embedded store as it was), by one process
   through the local server, and split among 2 and 3 processes saving at once through it;
   runs/s of the whole (from the children's start to the last one's end, imports excluded:
   each child waits for a go file after opening the store).

Bytecode: the children run with ``PYTHONPYCACHEPREFIX`` in the scratch directory, warmed by one
untimed run of each command (the cached case, as an environment installed with
``--compile-bytecode``). Everything lives in a temporary directory removed at the end; every
local server started is stopped.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench_store import scratch_directory

from bluesky_analysis_store.store._local_server import read_state, stop

IMPORTS = "import bluesky, ophyd.sim, tiled.client"

OPEN = """
import sys
from bluesky_analysis_store import AnalysisStore
with AnalysisStore.open(sys.argv[1], read_only=True, local_server=sys.argv[2] == "1") as store:
    len(store)
"""

SAVE = """
import sys, time
from pathlib import Path
import numpy as np
from bluesky_analysis_store import AnalysisStore, capture_provenance

def analyse(values):
    return values
analyse.version = "0.1"

directory, local, first, count, go = sys.argv[1:6]
rng = np.random.default_rng(int(first))
with AnalysisStore.open(directory, local_server=local == "1") as store:
    Path(f"{go}.ready.{first}").touch()
    while not Path(go).exists():
        time.sleep(0.005)
    for i in range(int(first), int(first) + int(count)):
        events = [{"primary": {"spectrum": rng.random(32, dtype=np.float32), "total": 1.0}}
                  for _ in range(10)]
        provenance = capture_provenance(
            analyse, parents=["0f3c5a8e-9b1d-4c2e-8a7f-1d2e3f4a5b6c"], parameters={"i": i}
        )
        store.save(events, {}, provenance=provenance)
"""


def _env(scratch: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BAS_")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.update(PYTHONPYCACHEPREFIX=str(scratch / "pyc"), TMPDIR=str(scratch / "tmp"))
    return env


def _timed(command: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def _stop(directory: Path) -> None:
    stop(directory)


def opening(scratch: Path, repeats: int) -> None:
    env = _env(scratch)
    store = scratch / "open-store"
    python = sys.executable
    commands = {
        "anchor: imports": [python, "-c", IMPORTS],
        "open, local server running": [python, "-c", OPEN, str(store), "1"],
        "open in process": [python, "-c", OPEN, str(store), "0"],
    }
    go = scratch / "go-open"
    go.touch()
    subprocess.run([python, "-c", SAVE, str(store), "0", "0", "1", str(go)], env=env, check=True)
    for name, command in commands.items():  # warm the bytecode
        if name == "open in process":
            _stop(store)  # else the server holds the store
        subprocess.run(command, env=env, check=True, capture_output=True)
    times: dict[str, list[float]] = {name: [] for name in commands}
    first: list[float] = []
    names = list(commands)
    for repeat in range(repeats):
        for name in names[repeat % 3 :] + names[: repeat % 3]:
            if name == "open in process":
                _stop(store)
            elif name == "open, local server running" and read_state(store) is None:
                subprocess.run(commands[name], env=env, check=True)  # starts it, untimed
            times[name].append(_timed(commands[name], env))
        _stop(store)
        first.append(_timed(commands["open, local server running"], env))
    _stop(store)
    anchor = statistics.median(times["anchor: imports"])
    print(f"\n1. opening ({repeats} repeats; median (min-max), ratio to the anchor's median)")
    for name, values in [*times.items(), ("first open: starts the server", first)]:
        median = statistics.median(values)
        print(
            f"  {name:34s} {median:6.2f} s ({min(values):.2f}-{max(values):.2f})  "
            f"{median / anchor:5.2f}x"
        )


def saving(scratch: Path, repeats: int, runs: int) -> None:
    env = _env(scratch)
    python = sys.executable
    cases = [("one process, in process", "0", 1), ("one process, local server", "1", 1)]
    cases += [(f"{n} processes, local server", "1", n) for n in (2, 3)]
    rates: dict[str, list[float]] = {name: [] for name, _, _ in cases}
    for repeat in range(repeats + 1):  # the first round warms the bytecode, untimed
        for name, local, processes in cases[repeat % 4 :] + cases[: repeat % 4]:
            store = scratch / f"save-{repeat}-{name.replace(' ', '-').replace(',', '')}"
            go = scratch / f"go-{store.name}"
            share = runs // processes
            children = [
                subprocess.Popen(
                    [python, "-c", SAVE, str(store), local, str(k * share), str(share), str(go)],
                    env=env,
                )
                for k in range(processes)
            ]
            ready = [Path(f"{go}.ready.{k * share}") for k in range(processes)]
            while not all(path.exists() for path in ready):  # every child open and waiting
                if any(child.poll() is not None for child in children):
                    raise RuntimeError(f"{name}: a child exited before saving")
                time.sleep(0.05)
            start = time.perf_counter()
            go.touch()
            for child in children:
                if child.wait() != 0:
                    raise RuntimeError(f"{name}: a child failed")
            elapsed = time.perf_counter() - start
            _stop(store)
            if repeat:
                rates[name].append(share * processes / elapsed)
    anchor = statistics.median(rates[cases[0][0]])
    print(f"\n2. saving {runs} small runs ({repeats} repeats; runs/s median (min-max), ratio)")
    for name, values in rates.items():
        median = statistics.median(values)
        print(
            f"  {name:30s} {median:6.1f} runs/s ({min(values):.1f}-{max(values):.1f})  "
            f"{median / anchor:5.2f}x"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--skip-saves", action="store_true")
    args = parser.parse_args()
    with scratch_directory("bas-bench-processes-") as scratch:
        opening(scratch, args.repeats)
        if not args.skip_saves:
            saving(scratch, args.repeats, args.runs)


if __name__ == "__main__":
    main()
