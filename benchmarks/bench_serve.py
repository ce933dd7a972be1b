"""Time until ``bas serve`` answers, against ``tiled serve catalog --temp``, in one process run.

    .venv/bin/python benchmarks/bench_serve.py [--repeats 5] [--uncached]

Measured: wall time from ``Popen`` until the server answers an authenticated request with 200
(``GET /api/v1/metadata/`` with ``Authorization: Apikey KEY``, polled every 50 ms), for

* anchor: ``tiled serve catalog --temp --api-key KEY`` (a new SQLite catalog in a temporary
  directory, initialized in process);
* ``bas serve NEW``: a directory that does not exist yet (a new embedded store);
* ``bas serve EXISTING``: a store made by an earlier ``bas serve`` (stopped since).

Each repeat runs the three in a rotating order on free ports of 127.0.0.1; every server is
stopped (SIGINT, then SIGKILL after 30 s) before the next starts. Bytecode: by default the
children compile to and read from ``PYTHONPYCACHEPREFIX=<scratch>/pyc``, warmed by one untimed
run of each command first (a compiled install's case); ``--uncached`` sets
``PYTHONDONTWRITEBYTECODE=1`` and no prefix (this environment's case: the venv holds no
``.pyc``). Everything lives in a temporary directory (under ``$TMPDIR``) removed at the end; the
children's ``TMPDIR`` points inside it (``--temp`` makes its catalog there).
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

KEY = secrets.token_hex(32)
BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _command(kind: str, port: int, scratch: Path) -> list[str]:
    if kind == "anchor":
        return [
            str(BIN / "tiled"),
            *("serve", "catalog", "--temp", "--api-key", KEY, "--port", str(port)),
        ]
    directory = scratch / ("existing" if kind == "existing" else f"new-{secrets.token_hex(4)}")
    return [str(BIN / "bas"), "serve", str(directory), "--port", str(port)]


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _ready(kind: str, scratch: Path, env: dict[str, str]) -> float:
    """Seconds from start until an authenticated request is answered; the server is stopped."""
    port = _free_port()
    log = scratch / f"{kind}.log"
    url = f"http://127.0.0.1:{port}/api/v1/metadata/"
    headers = {"Authorization": f"Apikey {KEY}"}
    with log.open("wb") as out:
        start = time.perf_counter()
        process = subprocess.Popen(
            _command(kind, port, scratch), env=env, cwd=scratch, stdout=out, stderr=out
        )
    try:
        with httpx.Client(timeout=5) as client:
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"{kind} exited:\n{log.read_text()}")
                try:
                    if client.get(url, headers=headers).status_code == 200:
                        return time.perf_counter() - start
                except httpx.TransportError:
                    pass
                if time.perf_counter() - start > 300:
                    raise RuntimeError(f"{kind} not ready in 300 s:\n{log.read_text()}")
                time.sleep(0.05)
    finally:
        _stop(process)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--uncached", action="store_true", help="no bytecode cache (see above)")
    args = parser.parse_args()
    kinds = ["anchor", "new", "existing"]
    scratch = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    try:
        env = {**os.environ, "TMPDIR": str(scratch), "BAS_API_KEY": KEY}
        env.pop("BAS_READ_API_KEY", None)
        if args.uncached:
            env["PYTHONDONTWRITEBYTECODE"] = "1"
            env.pop("PYTHONPYCACHEPREFIX", None)
        else:
            env.pop("PYTHONDONTWRITEBYTECODE", None)
            env["PYTHONPYCACHEPREFIX"] = str(scratch / "pyc")
        # the warm-up: compiles the bytecode, and its "existing" run creates the existing store
        for kind in kinds:
            _ready(kind, scratch, env)
        times: dict[str, list[float]] = {kind: [] for kind in kinds}
        for repeat in range(args.repeats):
            order = kinds[repeat % 3 :] + kinds[: repeat % 3]
            for kind in order:
                times[kind].append(_ready(kind, scratch, env))
            print(
                f"repeat {repeat + 1}: "
                + ", ".join(f"{k} {times[k][-1]:.2f} s" for k in kinds)
                + f" (load {os.getloadavg()[0]:.1f})",
                flush=True,
            )
        anchor = statistics.median(times["anchor"])
        cache = "uncached" if args.uncached else "bytecode cached (PYTHONPYCACHEPREFIX, warmed)"
        print(f"\n{args.repeats} interleaved repeats, {cache}; ready = first 200 with the key")
        print(
            "| server | median (min–max) | ratio of medians | per-repeat ratio, median (min–max) |"
        )
        print("| --- | --- | --- | --- |")
        labels = {
            "anchor": "anchor: `tiled serve catalog --temp`",
            "new": "`bas serve NEW` (new store)",
            "existing": "`bas serve EXISTING`",
        }
        for kind in kinds:
            values = times[kind]
            ratios = [v / a for v, a in zip(values, times["anchor"], strict=True)]
            print(
                f"| {labels[kind]} | {statistics.median(values):.2f} s "
                f"({min(values):.2f}–{max(values):.2f}) | "
                f"{statistics.median(values) / anchor:.2f}× | "
                f"**{statistics.median(ratios):.2f}×** ({min(ratios):.2f}–{max(ratios):.2f}) |"
            )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
