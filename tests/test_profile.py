"""The IPython beamline profile: ``bas profile install``, then a real IPython session using it."""

from __future__ import annotations

import ast
import json
import os
import re
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bluesky_analysis_store import AnalysisStore, AnalysisStoreError, install_profile
from bluesky_analysis_store.cli import main
from bluesky_analysis_store.cli._profile import startup_files
from bluesky_analysis_store.store._local_server import stop

STARTUP_FILES = [
    "00-base.py",
    "10-stores.py",
    "20-samples.py",
    "50-insert_analysis.py",
    "90-plans.py",
]
API_KEY_SENTINEL = "bas-profile-test-key-0123456789abcdef"

# Runs inside IPython after the startup files: the names come from the profile.
SESSION = """
import json
from tiled.queries import Contains

sample = set_sample("profile test crystal", sample_composition="Si")
(raw_uid,) = RE(bp.scan([det], motor, -1, 1, 11))
live.wait(timeout=120)
assert not live.failures, live.failures
(plan_uid,) = RE(
    analyze(
        normalize_and_bin,
        [raw_uid],
        catalog=store.raw,
        root=store.root,
        parameters={"bins": 5},
        registry=store.registry,
        packet=packet,
    )
)
raw2_uid, plan2_uid = RE(scan_and_analyze([det], motor, -1, 1, 11, bins=4))
live.wait(timeout=120)
assert not live.failures, live.failures
# a plain tiled query on the CatalogOfBlueskyRuns client, and the store's own
found = sorted(store.runs.search(Contains("start.parent_uids", raw_uid)))
found2 = sorted(store.derived_from(raw2_uid))
print("RESULT " + json.dumps({
    "raw_uid": raw_uid, "live_uid": live.saved[raw_uid], "plan_uid": plan_uid, "found": found,
    "raw2_uid": raw2_uid, "live2_uid": live.saved[raw2_uid], "plan2_uid": plan2_uid,
    "found2": found2, "sample_uuid": sample["sample_uuid"],
}))
"""


def _run_session(ipython_dir: Path, profile: str, code: str, env: dict[str, str], cwd: Path) -> str:
    """Run ``code`` in real IPython with the profile; return stdout, checked for errors."""
    command = [
        sys.executable,
        "-m",
        "IPython",
        f"--ipython-dir={ipython_dir}",
        f"--profile={profile}",
        "--no-banner",
        "--simple-prompt",
        "--colors=nocolor",
        "-c",
        code,
    ]
    session = subprocess.run(
        command, env=env, cwd=cwd, capture_output=True, text=True, timeout=480, check=False
    )
    output = session.stdout + session.stderr
    assert session.returncode == 0, output
    assert "Traceback" not in output, output
    assert "error in handling startup files" not in output, output
    return session.stdout


def _result(stdout: str) -> dict[str, Any]:
    (line,) = [line for line in stdout.splitlines() if line.startswith("RESULT ")]
    return dict(json.loads(line.removeprefix("RESULT ")))


def _session_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BAS_", "IPYTHON"))}
    (tmp_path / "tmp").mkdir()
    (tmp_path / "home").mkdir()
    env.update(
        BAS_STORE=str(tmp_path / "store"),
        BAS_API_KEY=API_KEY_SENTINEL,  # read from the environment; an embedded store ignores it
        BAS_BEAMLINE="test-beamline",
        TMPDIR=str(tmp_path / "tmp"),  # ophyd.sim makes a temporary directory at import
        HOME=str(tmp_path / "home"),
    )
    return env


@pytest.mark.slow
@pytest.mark.timeout(600)  # a whole session: ~20 s start-up, two scans, four analyses
def test_installed_profile_runs_a_session_in_real_ipython(tmp_path, capsys):
    ipython_dir = tmp_path / "ipython"
    assert main(["profile", "install", "beamline", "--ipython-dir", str(ipython_dir)]) == 0
    startup = ipython_dir / "profile_beamline" / "startup"
    assert f"into {startup}" in capsys.readouterr().out
    assert sorted(p.name for p in startup.glob("*.py")) == STARTUP_FILES

    stdout = _run_session(ipython_dir, "beamline", SESSION, _session_env(tmp_path), tmp_path)
    opened = [line for line in stdout.splitlines() if "analysis store" in line]
    assert opened == [
        f"bluesky-analysis-store: analysis store {tmp_path / 'store'} "
        f"(derived files in {tmp_path / 'store' / 'files'}; raw runs in container 'raw' "
        "of the store)"
    ]
    result = _result(stdout)
    raw_uid, raw2_uid = result["raw_uid"], result["raw2_uid"]
    assert result["found"] == sorted([result["live_uid"], result["plan_uid"]])
    assert result["found2"] == sorted([result["live2_uid"], result["plan2_uid"]])

    # the session's store, reopened here through the local server the session started (still
    # up: its idle timeout has not passed): raw scans in "raw", analysis runs in the store
    with AnalysisStore.open(tmp_path / "store", raw="raw", local_server=True) as store:
        assert sorted(store.raw) == sorted([raw_uid, raw2_uid])
        assert len(store) == 4
        expected = {
            raw_uid: {result["live_uid"], result["plan_uid"]},
            raw2_uid: {result["live2_uid"], result["plan2_uid"]},
        }
        for parent, derived in expected.items():
            assert set(store.derived_from(parent)) == derived
            for uid in derived:
                start = store[uid].metadata["start"]
                assert start["parent_uids"] == [parent]
                assert [p["uid"] for p in start["provenance"]["parents"]] == [parent]
                assert start["provenance"]["code"]["name"] == "normalize_and_bin"
                assert store[uid].metadata["stop"]["exit_status"] == "success"
        live_start = store[result["live_uid"]].metadata["start"]
        assert live_start["provenance"]["parameters"]["bins"] == 10  # BAS_LIVE_BINS default
        plan2 = store[result["plan2_uid"]]
        assert plan2.metadata["start"]["provenance"]["parameters"]["bins"] == 4
        assert plan2.metadata["start"]["sample_uuid"] == result["sample_uuid"]
        assert int(plan2["binned"].read()["count"].sum()) == 11
        raw_start = store.raw[raw_uid].metadata["start"]
        assert raw_start["sample_uuid"] == result["sample_uuid"]
        assert raw_start["sample_name"] == "profile test crystal"
        assert raw_start["beamline_id"] == "test-beamline"
        assert raw_start["profile"] == "beamline"

    assert stop(tmp_path / "store") is not None
    # the API key came from the environment and went nowhere on disk
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert API_KEY_SENTINEL.encode() not in path.read_bytes(), path


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_raw_catalog_on_another_tiled_server(tmp_path):
    """``BAS_RAW`` as a URI: raw scans go to that server (its own key), analyses to the store."""
    from tiled.client import from_uri
    from tiled.structures.core import Spec

    install_profile("bas", tmp_path / "ipython")
    raw_key = secrets.token_hex(16)
    # a separate process: tiled's server settings are process-wide, and an in-process server with
    # its own API key would change them under the session's in-process apps
    serve = (
        "import sys, time\n"
        "from tiled.server import SimpleTiledServer\n"
        "server = SimpleTiledServer(sys.argv[1], api_key=sys.argv[2])\n"
        "print(server.uri.split('?')[0], flush=True)\n"
        "time.sleep(3600)\n"
    )
    raw_server = subprocess.Popen(
        [sys.executable, "-c", serve, str(tmp_path / "raw-server"), raw_key],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "TMPDIR": str(tmp_path)},
    )
    try:
        assert raw_server.stdout is not None
        base_uri = raw_server.stdout.readline().strip()
        assert base_uri.startswith("http://127.0.0.1:"), base_uri
        client = from_uri(base_uri, api_key=raw_key)
        client.create_container("raw", specs=[Spec("CatalogOfBlueskyRuns", version="3.0")])
        env = _session_env(tmp_path)
        del env["BAS_API_KEY"]
        env.update(BAS_RAW=f"{base_uri}/metadata/raw", BAS_RAW_API_KEY=raw_key)
        code = (
            "import json\n"
            "(uid,) = RE(bp.scan([det], motor, -1, 1, 5))\n"
            "live.wait(timeout=120)\n"
            "print('RESULT ' + json.dumps({'raw_uid': uid, 'derived': live.saved.get(uid)}))\n"
        )
        stdout = _run_session(tmp_path / "ipython", "bas", code, env, tmp_path)
        assert f"raw runs in {env['BAS_RAW']})" in stdout
        result = _result(stdout)
        assert list(client["raw"]) == [result["raw_uid"]]
        assert client["raw"][result["raw_uid"]].metadata["stop"]["exit_status"] == "success"
        client.context.close()
    finally:
        raw_server.terminate()
        raw_server.communicate(timeout=60)  # reaps it and closes its stdout
    with AnalysisStore.open(tmp_path / "store", local_server=True) as store:
        assert store.derived_from(result["raw_uid"]) == [result["derived"]]
    stop(tmp_path / "store")


def test_install_refuses_to_overwrite_different_files_without_force(tmp_path, capsys):
    ipython_dir = tmp_path / "ipython"
    installed = install_profile("bas", ipython_dir)
    assert installed == ipython_dir / "profile_bas"
    startup = installed / "startup"
    assert install_profile("bas", ipython_dir) == installed  # identical files: nothing to do
    edited = startup / "20-samples.py"
    edited.write_text(edited.read_text() + "\nprint('edited at the beamline')\n")
    (startup / "10-stores.py").unlink()
    (startup / "99-mine.py").write_text("print('mine')\n")

    assert main(["profile", "install", "bas", "--ipython-dir", str(ipython_dir)]) == 1
    error = capsys.readouterr().err
    assert len(error.strip().splitlines()) == 1
    assert error.startswith(f"bas profile: error: {edited} exists and differs")
    assert "--force" in error
    assert "edited at the beamline" in edited.read_text()
    assert not (startup / "10-stores.py").exists()  # nothing written when one file differs
    with pytest.raises(FileExistsError, match=r"20-samples\.py"):
        install_profile("bas", ipython_dir)

    assert main(["profile", "install", "bas", "--ipython-dir", str(ipython_dir), "--force"]) == 0
    shipped = {entry.name: entry.read_bytes() for entry in startup_files()}
    assert {p.name: p.read_bytes() for p in startup.glob("[0-9]*-*.py") if p.name in shipped} == (
        shipped
    )
    assert (startup / "99-mine.py").read_text() == "print('mine')\n"  # not ours: left alone
    assert not list(startup.glob(".*.tmp"))


def test_install_uses_ipythons_directory_and_checks_the_name(tmp_path, monkeypatch):
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "from-env"))
    assert install_profile() == tmp_path / "from-env" / "profile_bas"
    for name in ("", "../elsewhere", "a/b", ".hidden"):
        with pytest.raises(AnalysisStoreError, match="not usable"):
            install_profile(name, tmp_path)


def test_startup_files_read_keys_from_the_environment_only():
    shipped = startup_files()
    assert [entry.name for entry in shipped] == STARTUP_FILES
    stores = next(entry for entry in shipped if entry.name == "10-stores.py").read_text()
    assert "api_key=os.environ.get(API_KEY_ENV)" in stores
    assert 'api_key=os.environ.get("BAS_RAW_API_KEY")' in stores
    for entry in shipped:
        tree = ast.parse(entry.read_text(), entry.name)
        for node in ast.walk(tree):
            if isinstance(node, ast.keyword) and node.arg and "key" in node.arg.lower():
                assert not isinstance(node.value, ast.Constant), (entry.name, node.lineno)
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                # nothing that looks like a token: long runs of letters and digits
                assert not re.search(r"[A-Za-z0-9_-]{24,}", node.value), (entry.name, node.value)
