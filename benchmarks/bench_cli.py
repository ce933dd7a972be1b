"""Start-up of the read commands ``bas show/search/lineage``, against its anchor, in one run.

    .venv/bin/python benchmarks/bench_cli.py [--repeats 5] [--served]

Measured (wall time of a subprocess, median and range of ``--repeats`` interleaved rounds):

* anchor: ``python -c "import bluesky, ophyd.sim, tiled.client"``, what any bluesky + tiled
  session imports;
* ours: ``bas show UID`` (a ``fit_peak`` run, by its first 8 characters), ``bas search
  --analysis fit_peak`` and ``bas lineage UID`` (the ``compare_peaks`` run: 3 parents, 3 raw
  grandparents) on the store ``bas demo`` makes, embedded (through its local server, which the
  demo started and which stays up between commands, as at a beamline); with ``--served``, also
  on a copy of it served by ``bas serve`` on loopback (``--store http://... --root ...``).

Bytecode: the children run with ``PYTHONPYCACHEPREFIX`` in the scratch directory and without
``PYTHONDONTWRITEBYTECODE``, warmed by one run of every command first, so this measures the
cached case (an environment installed with ``--compile-bytecode``).

The HTTP requests each command makes are counted once (not timed) by a child that wraps
``httpx.Client.send`` (the in-process ASGI transport goes through it too) and runs the command.

Everything lives in a temporary directory removed at the end; the children's ``TMPDIR`` points
inside it.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from bench_store import scratch_directory

from bluesky_analysis_store.store._local_server import stop

IMPORTS = "import bluesky, ophyd.sim, tiled.client"

# a child that counts the requests of one ``bas`` command (printed last on stderr)
COUNT = """
import sys, httpx
from bluesky_analysis_store.cli._commands import main
sent = []
original = httpx.Client.send
def send(self, request, *args, **kwargs):
    sent.append((request.method, request.url.path))
    return original(self, request, *args, **kwargs)
httpx.Client.send = send
code = main(sys.argv[1:])
print(f"requests: {len(sent)}", file=sys.stderr)
sys.exit(code)
"""


def _bas(*args: str) -> list[str]:
    return [sys.executable, "-m", "bluesky_analysis_store.cli", *args]


def _run(command: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, check=False)
    if result.returncode != 0 or "Traceback" in result.stdout + result.stderr:
        raise RuntimeError(f"{command[2:]} failed:\n{result.stdout}\n{result.stderr}")
    return result


def _timed(command: list[str], env: dict[str, str], cwd: Path) -> float:
    start = time.perf_counter()
    _run(command, env, cwd)
    return time.perf_counter() - start


def _requests(command: list[str], env: dict[str, str], cwd: Path) -> int:
    """How many HTTP requests the ``bas`` command ``command`` makes."""
    args = command[command.index("bluesky_analysis_store.cli") + 1 :]
    stderr = _run([sys.executable, "-c", COUNT, *args], env, cwd).stderr
    return int(stderr.rsplit("requests: ", 1)[1].split()[0])


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _serve(directory: Path, env: dict[str, str], cwd: Path) -> tuple[subprocess.Popen[str], str]:
    """``bas serve directory`` on a free loopback port, once it answers ``/healthz``."""
    port = _free_port()
    server = subprocess.Popen(
        _bas("serve", str(directory), "--port", str(port)),
        env=env,
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    uri = f"http://127.0.0.1:{port}"
    for _ in range(1200):
        try:
            with urllib.request.urlopen(f"{uri}/healthz", timeout=1):
                return server, uri
        except OSError:
            time.sleep(0.1)
    server.terminate()
    raise RuntimeError("bas serve did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--served", action="store_true", help="also on a served copy")
    args = parser.parse_args()

    with scratch_directory("bench-cli-") as base:
        env = {k: v for k, v in os.environ.items() if not k.startswith("BAS_")}
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env.update(PYTHONPYCACHEPREFIX=str(base / "pyc"), TMPDIR=str(base / "tmp"))
        demo = base / "demo"
        _run(_bas("demo", "--directory", str(demo)), env, base)
        store = demo / "store"
        env["BAS_STORE"] = str(store)

        def uids(analysis: str, store_env: dict[str, str]) -> list[str]:
            out = _run(_bas("search", "--analysis", analysis), store_env, base).stdout
            return [line.split()[0] for line in out.splitlines() if line.strip()]

        fit, comparison = uids("fit_peak", env)[0], uids("compare_peaks", env)[0]
        commands: dict[str, tuple[list[str], dict[str, str]]] = {
            f"anchor: python -c '{IMPORTS}'": ([sys.executable, "-c", IMPORTS], env),
            "bas show UID": (_bas("show", fit[:8]), env),
            "bas search --analysis fit_peak": (_bas("search", "--analysis", "fit_peak"), env),
            "bas lineage UID": (_bas("lineage", comparison), env),
        }
        server = None
        try:
            if args.served:
                served = base / "served"
                shutil.copytree(store, served, symlinks=True)
                for name in (".bas-open.lock", ".bas-server.json"):
                    (served / name).unlink(missing_ok=True)
                key = secrets.token_hex(16)
                server, uri = _serve(served, {**env, "BAS_API_KEY": key}, base)
                remote = ["--store", uri, "--root", str(served / "files")]
                served_env = {**env, "BAS_API_KEY": key}
                commands |= {
                    "served: bas show UID": (_bas("show", fit[:8], *remote), served_env),
                    "served: bas search --analysis fit_peak": (
                        _bas("search", "--analysis", "fit_peak", *remote),
                        served_env,
                    ),
                    "served: bas lineage UID": (_bas("lineage", comparison, *remote), served_env),
                }
            for command, command_env in commands.values():  # warm the bytecode cache
                _run(command, command_env, base)
            requests = {
                label: _requests(command, command_env, base)
                for label, (command, command_env) in commands.items()
                if "anchor" not in label
            }
            times: dict[str, list[float]] = {label: [] for label in commands}
            for _ in range(args.repeats):
                for label, (command, command_env) in commands.items():  # interleaved
                    times[label].append(_timed(command, command_env, base))
        finally:
            if server is not None:
                server.terminate()
                server.wait(timeout=60)
            stop(store)  # the embedded store's local server, which the first command started

        anchor = statistics.median(times[f"anchor: python -c '{IMPORTS}'"])
        print(
            f"{args.repeats} rounds, interleaved; {os.cpu_count()} CPUs; bytecode cached "
            f"(PYTHONPYCACHEPREFIX, warmed); load average {os.getloadavg()[0]:.1f}"
        )
        print()
        print("| command | median | min–max | ratio vs anchor | requests |")
        print("| --- | --- | --- | --- | --- |")
        for label, values in times.items():
            median = statistics.median(values)
            print(
                f"| {label} | {median:.2f} s | {min(values):.2f}–{max(values):.2f} s | "
                f"{median / anchor:.2f}× | {requests.get(label, '')} |"
            )


if __name__ == "__main__":
    main()
