"""Several processes on one embedded store, through its local server (issue 13, part 2).

Every process here is real: an IPython session with the beamline profile, Python scripts that
save and read like a notebook, ``bas`` commands in a terminal; the local server is the process
they start themselves. One saving process is killed with SIGKILL mid-save.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from bluesky_analysis_store import AnalysisStore, LocalServerError, StoreInUseError
from bluesky_analysis_store.cli import main
from bluesky_analysis_store.store._fsck import check_store
from bluesky_analysis_store.store._local_server import (
    LEASE_FILE,
    LOG_FILE,
    STATE_FILE,
    read_state,
    stop,
)

TESTS = Path(__file__).parent

#: A "notebook": saves ``count`` small runs of its own lineages (numbered ``first`` on), reads
#: each back, prints one JSON line per run.
NOTEBOOK = """
import json, sys
import numpy as np
from helpers import make_provenance
from bluesky_analysis_store import AnalysisStore

directory, first, count, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
with AnalysisStore.open(directory) as store:
    for i in range(first, first + count):
        print(json.dumps({"saving": i}), flush=True)
        data = [{"result": {"x": np.full(size, float(i)), "i": i}}]
        uid = store.save(data, {"index": i}, provenance=make_provenance(parameters={"i": i}))
        read = store.runs[uid]["result"].read()
        print(json.dumps({"i": i, "uid": uid, "x0": float(read["x"][0][0])}), flush=True)
"""

#: The beamline session: two scans, each analysed live by the profile's LiveAnalysis.
SESSION = """
import json
uids = []
for n in (5, 7):
    (raw_uid,) = RE(bp.scan([det], motor, -1, 1, n))
    uids.append(raw_uid)
live.wait(timeout=300)
assert not live.failures, live.failures
print("RESULT " + json.dumps({"raw": uids, "analysis": [live.saved[u] for u in uids]}))
"""


def _environment(tmp_path: Path, idle: float = 60) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BAS_", "IPYTHON"))}
    for name in ("tmp", "home"):
        (tmp_path / name).mkdir(exist_ok=True)
    env.update(
        BAS_LOCAL_SERVER="1",
        BAS_LOCAL_SERVER_IDLE=str(idle),
        BAS_BEAMLINE="test-beamline",
        PYTHONPATH=os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")]),
        PYTHONUNBUFFERED="1",
        TMPDIR=str(tmp_path / "tmp"),
        HOME=str(tmp_path / "home"),
    )
    return env


def _notebook(directory: Path, first: int, count: int, env: dict[str, str], size: int = 10):
    command = [sys.executable, "-c", NOTEBOOK, str(directory), str(first), str(count), str(size)]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _bas(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "bluesky_analysis_store.cli", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


def _lines(output: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in output.decode().splitlines() if line.startswith("{")]


def _finish(process: subprocess.Popen[bytes], timeout: float = 400) -> list[dict[str, Any]]:
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, err.decode()
    return [line for line in _lines(out) if "uid" in line]


def _first_saved(process: subprocess.Popen[bytes]) -> dict[str, Any]:
    """The first run a notebook reports saved (read from its output as it goes)."""
    assert process.stdout is not None
    for line in process.stdout:
        (entry,) = _lines(line)
        if "uid" in entry:
            return entry
    raise AssertionError(process.communicate()[1].decode())


@pytest.fixture
def local(tmp_path: Path) -> Any:
    """A store directory and its environment; its local server is stopped at the end."""
    directory = tmp_path / "store"
    yield directory, _environment(tmp_path)
    stop(directory)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_ipython_a_notebook_and_bas_share_one_store(local, tmp_path, capsys):
    directory, env = local
    env = {**env, "BAS_STORE": str(directory)}
    ipython_dir = tmp_path / "ipython"
    assert main(["profile", "install", "beamline", "--ipython-dir", str(ipython_dir)]) == 0
    session = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "IPython",
            f"--ipython-dir={ipython_dir}",
            "--profile=beamline",
            "--no-banner",
            "--simple-prompt",
            "--colors=nocolor",
            "-c",
            SESSION,
        ],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    # two notebooks saving the same lineages at once: idempotence across processes
    notebooks = [_notebook(directory, 0, 4, env) for _ in range(2)]
    first = _first_saved(notebooks[0])  # the store exists: a terminal may ask it now
    searches = [_bas("search", "--analysis", "reduce_spectrum", env=env) for _ in range(3)]
    saved = [_finish(notebook) for notebook in notebooks]
    saved[0].insert(0, first)
    out, err = session.communicate(timeout=600)
    output = out.decode() + err.decode()
    assert session.returncode == 0, output
    assert "Traceback" not in output, output
    (line,) = [x for x in out.decode().splitlines() if x.startswith("RESULT ")]
    result = json.loads(line.removeprefix("RESULT "))

    assert [s.returncode for s in searches] == [0, 0, 0], [s.stderr for s in searches]
    # the same lineage saved by two processes at once is one run
    assert [r["uid"] for r in saved[0]] == [r["uid"] for r in saved[1]]
    assert [r["x0"] for r in saved[0]] == [0.0, 1.0, 2.0, 3.0]
    state = read_state(directory)
    assert state is not None
    assert stat.S_IMODE((directory / STATE_FILE).stat().st_mode) == 0o600
    with AnalysisStore.open(directory, raw="raw", read_only=True, local_server=True) as store:
        uids = set(store.runs)
        assert {r["uid"] for r in saved[0]} | set(result["analysis"]) == uids
        assert len(uids) == 6
        for raw_uid, analysis_uid in zip(result["raw"], result["analysis"], strict=True):
            assert store.derived_from(raw_uid) == [analysis_uid]
    shown = _bas("show", saved[0][0]["uid"][:8], env=env)
    assert shown.returncode == 0, shown.stderr
    assert saved[0][0]["uid"] in shown.stdout
    assert read_state(directory) == state  # one server served them all
    assert "serving" in (directory / LOG_FILE).read_text()


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_process_killed_mid_save_harms_nobody_else(local, capsys):
    directory, env = local
    killed = _notebook(directory, 0, 50, env, size=2_000_000)  # 16 MB per run: slow saves
    assert killed.stdout is not None
    started = 0
    while started < 3:  # wait until it is saving its fourth run, then kill it
        line = killed.stdout.readline()
        assert line, killed.communicate()[1].decode()
        started = json.loads(line).get("saving", started)
    time.sleep(0.2)
    killed.send_signal(signal.SIGKILL)
    killed.communicate()
    server = read_state(directory)
    assert server is not None

    # another process goes on: saves again the runs the killed one finished (the same runs),
    # and new ones
    after = _finish(_notebook(directory, 0, 6, env, size=2_000_000))
    assert [r["x0"] for r in after] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    assert read_state(directory) == server  # the server was not disturbed

    with AnalysisStore.open(directory, read_only=True, local_server=True) as store:
        report = check_store(store)
        complete = set(report.complete)
        assert {r["uid"] for r in after} <= complete
        # the killed save left at most one run, and it does not look complete
        left = set(store.runs) - {r["uid"] for r in after}
        assert len(left) <= 1
        assert not left & complete
        for uid in complete:
            assert len(store.runs[uid]["result"].read()["x"]) == 1
    fsck = _bas("fsck", "--store", str(directory), env=env)
    assert fsck.returncode in (0, 1), fsck.stderr
    assert "complete run" in fsck.stdout
    # nobody holds a lease now, the killed process neither: the server may stop when idle
    # (it takes this lock itself only after a minute without requests, not during the test)
    lease = os.open(directory / LEASE_FILE, os.O_RDONLY)
    try:
        fcntl.flock(lease, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        os.close(lease)


def test_the_server_stops_once_idle_and_a_killed_one_is_replaced(tmp_path, monkeypatch):
    directory = tmp_path / "store"
    env = _environment(tmp_path, idle=1)
    monkeypatch.setenv("BAS_LOCAL_SERVER_IDLE", "1")  # the servers this process starts
    with AnalysisStore.open(directory, local_server=True) as store:
        first = read_state(directory)
        assert first is not None
        time.sleep(3)  # longer than the idle timeout: this process's lease keeps it up
        assert len(store) == 0
        assert read_state(directory) == first
        # a killed server: its state file stays, stale
        os.kill(first.pid, signal.SIGKILL)
        _wait_for(lambda: not _alive(first.pid))
    assert read_state(directory) == first
    with AnalysisStore.open(directory, local_server=True) as store:
        second = read_state(directory)
        assert second is not None
        assert second.pid != first.pid
        assert len(store) == 0
        # the key is required: no key, a wrong key
        for headers in ({}, {"Authorization": "Apikey " + "0" * 64}):
            reply = httpx.get(f"{second.uri}/api/v1/metadata/", headers=headers)
            assert reply.status_code == 401
    # nobody has it open: it stops within about a second, and says so
    _wait_for(lambda: not _alive(second.pid) and read_state(directory) is None)
    assert "stopping" in (directory / LOG_FILE).read_text()
    finished = _bas("stop-server", "--store", str(directory), env=env)
    assert finished.stdout.strip() == f"no local server is running for {directory}"


def test_a_store_held_in_process_is_refused_with_what_to_do(tmp_path):
    directory = tmp_path / "store"
    with AnalysisStore.open(directory, local_server=False):
        with pytest.raises(LocalServerError, match="exited at start") as raised:
            AnalysisStore.open(directory, local_server=True)
        assert StoreInUseError.__name__ in str(raised.value)
        assert f"bas stop-server --store {directory}" in str(raised.value)
    assert read_state(directory) is None


def test_stop_server_stops_it_and_the_store_reopens(local, tmp_path):
    directory, env = local
    with AnalysisStore.open(directory, local_server=True) as store:
        pid = read_state(directory).pid  # type: ignore[union-attr]
        assert len(store) == 0
    stopped = _bas("stop-server", "--store", str(directory), env=env)
    assert stopped.returncode == 0, stopped.stderr
    assert stopped.stdout.strip() == f"stopped the local server of {directory} (pid {pid})"
    assert not _alive(pid)
    assert read_state(directory) is None
    # an in-process open works again now that nobody holds the store
    with AnalysisStore.open(directory, local_server=False) as store:
        assert len(store) == 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _wait_for(condition: Any, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


#: What a command that reads a few runs must not import: tiled's server, the catalog, and
#: bluesky-tiled-plugins (whose import pulls in its writer, dask, xarray and numba).
NOT_FOR_READING = ["tiled.server", "tiled.catalog", "bluesky_tiled_plugins", "dask", "xarray"]

READ_COMMANDS = """
import json, sys
from bluesky_analysis_store.cli import main
for command in json.loads(sys.argv[1]):
    assert main(command) == 0, command
print(json.dumps(sorted(m for m in json.loads(sys.argv[2]) if m in sys.modules)))
"""


def test_read_commands_import_neither_tiled_server_nor_bluesky_tiled_plugins(local):
    import numpy as np
    from helpers import PARENT_UID, make_provenance

    directory, env = local
    with AnalysisStore.open(directory, local_server=True) as store:
        uid = store.save([{"s": {"x": np.arange(3.0)}}], {}, provenance=make_provenance())
    at = ["--store", str(directory)]
    commands = [
        ["show", uid[:8], *at],
        ["lineage", uid, *at],
        ["search", "--derived-from", PARENT_UID, *at],
    ]
    child = subprocess.run(
        [sys.executable, "-c", READ_COMMANDS, json.dumps(commands), json.dumps(NOT_FOR_READING)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert child.returncode == 0, child.stderr
    assert uid in child.stdout
    assert json.loads(child.stdout.splitlines()[-1]) == []
