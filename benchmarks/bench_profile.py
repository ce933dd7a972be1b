"""Start-up time of the IPython beamline profile, against its anchors, in one process run.

    .venv/bin/python benchmarks/bench_profile.py [--repeats 5] [--per-file]

Measured (wall time of a subprocess, median of ``--repeats`` interleaved runs):

* ours: ``python -m IPython --profile=bas -c "print(READY)"`` with the profile ``bas profile
  install`` puts in place, on an embedded store that exists already, timed until the command
  runs (where a user would see the prompt; the store goes on opening in the background, and the
  session's exit, which waits for it, is not timed). The first start, which creates the store
  and starts its local server, is printed separately; the later ones find the server running;
* anchor 1: the same IPython command with an empty profile (no startup files);
* anchor 2: ``python -c "import bluesky, ophyd.sim, tiled.client"``, what any bluesky +
  tiled profile imports.

``--per-file`` also measures profiles made of the first 1, 2, ... startup files, so each file's
share (the difference from the previous prefix) is visible.

Bytecode: the children run with ``PYTHONPYCACHEPREFIX`` in the temporary directory, warmed by
one untimed run of each command (the cached case, as an install with ``--compile-bytecode``).

Everything lives in a temporary directory (under ``$TMPDIR``) removed at the end; the children's
``TMPDIR`` (ophyd.sim makes a directory at import) points inside it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bluesky_analysis_store import install_profile
from bluesky_analysis_store.cli._profile import startup_files
from bluesky_analysis_store.store._local_server import stop

IMPORTS = "import bluesky, ophyd.sim, tiled.client"
#: What the IPython sessions print as their first command: the prompt would be there.
READY = "bas-bench-ready"


def _ipython(ipython_dir: Path, profile: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "IPython",
        f"--ipython-dir={ipython_dir}",
        f"--profile={profile}",
        "--no-banner",
        "-c",
        f"print({READY!r}, flush=True)",
    ]


def _timed(command: list[str], env: dict[str, str], cwd: Path) -> float:
    """Seconds until an IPython session runs its first command (it prints :data:`READY`), or
    until a plain ``python -c`` exits; the session's exit is waited for but not timed."""
    start = time.perf_counter()
    process = subprocess.Popen(
        command, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    elapsed = None
    for line in process.stdout:
        if elapsed is None and READY in line:
            elapsed = time.perf_counter() - start
    out, err = process.communicate()
    if elapsed is None:
        elapsed = time.perf_counter() - start
    if process.returncode != 0 or "Traceback" in out + err:
        raise RuntimeError(f"{command[-3:]} failed:\n{out}\n{err}")
    return elapsed


def _prefix_profile(ipython_dir: Path, shipped: Path, count: int) -> str:
    """A profile holding the first ``count`` startup files of the installed one."""
    name = f"first{count}"
    startup = ipython_dir / f"profile_{name}" / "startup"
    startup.mkdir(parents=True)
    for path in sorted(shipped.glob("*.py"))[:count]:
        shutil.copy(path, startup / path.name)
    return name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--per-file", action="store_true", help="time each startup file's share")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-profile-") as temporary:
        base = Path(temporary)
        ipython_dir = base / "ipython"
        shipped = install_profile("bas", ipython_dir) / "startup"
        (ipython_dir / "profile_empty" / "startup").mkdir(parents=True)
        (base / "tmp").mkdir()
        env = {k: v for k, v in os.environ.items() if not k.startswith("BAS_")}
        env.pop("PYTHONDONTWRITEBYTECODE", None)  # cached bytecode, as a compiled install has
        env.update(
            BAS_STORE=str(base / "store"),
            TMPDIR=str(base / "tmp"),
            PYTHONPYCACHEPREFIX=str(base / "pyc"),
        )

        commands: dict[str, list[str]] = {
            "anchor 1: IPython, empty profile": _ipython(ipython_dir, "empty"),
            f"anchor 2: python -c '{IMPORTS}'": [sys.executable, "-c", IMPORTS],
            "ours: IPython, bas profile": _ipython(ipython_dir, "bas"),
        }
        if args.per_file:
            names = [path.name for path in sorted(shipped.glob("*.py"))]
            for count in range(1, len(names)):
                profile = _prefix_profile(ipython_dir, shipped, count)
                commands[f"  profile of {', '.join(names[:count])}"] = _ipython(
                    ipython_dir, profile
                )

        first = _timed(commands["ours: IPython, bas profile"], env, base)  # creates the store
        for command in commands.values():  # warms the bytecode
            _timed(command, env, base)
        times: dict[str, list[float]] = {label: [] for label in commands}
        try:
            for _ in range(args.repeats):
                for label, command in commands.items():  # interleaved: load changes hit all
                    times[label].append(_timed(command, env, base))
        finally:
            stop(base / "store")  # the store's local server, up since the first start

        medians = {label: statistics.median(values) for label, values in times.items()}
        anchor1 = medians["anchor 1: IPython, empty profile"]
        anchor2 = medians[f"anchor 2: python -c '{IMPORTS}'"]
        print(f"startup files: {', '.join(entry.name for entry in startup_files())}")
        print(f"{args.repeats} runs each, interleaved; {os.cpu_count()} CPUs")
        print()
        print("| measurement | median | min | ratio vs anchor 1 | ratio vs anchor 2 |")
        print("| --- | --- | --- | --- | --- |")
        for label, median in medians.items():
            print(
                f"| {label} | {median:.2f} s | {min(times[label]):.2f} s | "
                f"{median / anchor1:.2f}× | {median / anchor2:.2f}× |"
            )
        print(f"| first start of the bas profile (creates the store) | {first:.2f} s | | | |")


if __name__ == "__main__":
    main()
