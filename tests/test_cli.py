"""``bas`` as a user runs it: a real subprocess."""

import re
import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree


def _bas(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "bluesky_analysis_store.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, cwd=cwd, timeout=180, env=env)


def test_demo_runs_a_session_and_shows_what_a_user_checks(tmp_path):
    result = _bas("demo", "--directory", "session", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "scanned 3 raw runs with ophyd.sim into the raw catalog" in out
    assert "LiveAnalysis saved 3 fit_peak runs as the scans finished" in out  # callback path
    assert "the analyze plan saved 1 compare_peaks run" in out  # plan path
    derived = next(line for line in out.splitlines() if line.startswith("derived runs of raw"))
    assert "(fit_peak)" in derived
    assert "(compare_peaks)" in derived
    assert "read back through tiled: [" in out
    assert out.count("fit_peak 1.0  [analysis]") == 3
    assert out.count("scan  [raw]") == 3
    picture = tmp_path / "session" / "lineage.svg"
    assert f"lineage picture: {picture}" in out
    svg = ElementTree.parse(picture).getroot()
    assert svg.tag.endswith("svg")
    assert len(svg.findall(".//{http://www.w3.org/2000/svg}rect")) == 7  # 3 raw, 3 fits, 1
    # the store is there to reopen, with the runs the session made
    from bluesky_analysis_store import AnalysisStore

    with AnalysisStore.open(tmp_path / "session" / "store", raw="raw") as store:
        assert len(store) == 4
        assert len(store.raw) == 3
        raw_uid = next(iter(store.raw))
        fits = store.derived_from(raw_uid)
        assert [store[u].metadata["start"]["analysis_name"] for u in fits] == ["fit_peak"]
        (comparison,) = store.derived_from(fits[0])
        start = store[comparison].metadata["start"]
        assert (start["analysis_name"], start["plan_name"]) == ("compare_peaks", "analyze")
        assert len(start["parent_uids"]) == 3
    # ophyd.sim's temporary directory stayed inside the demo directory
    assert list((tmp_path / "session" / "tmp").iterdir())


def test_errors_are_one_line_without_traceback(tmp_path):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("x")
    result = _bas("demo", "--directory", str(blocker), cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.startswith("bas demo: error: ")
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    debug = _bas("--debug", "demo", "--directory", str(blocker), cwd=tmp_path)
    assert "Traceback" in debug.stderr


def test_help_lists_the_commands(tmp_path):
    result = _bas("--help", cwd=tmp_path)
    assert result.returncode == 0
    assert "demo" in result.stdout


def test_save_show_search_lineage_on_an_embedded_store(tmp_path, monkeypatch):
    """As a user types them: each command a process of its own, all reaching the store through
    its local server (the default), which the first one starts and the last one stops."""
    import numpy as np
    import pandas as pd

    incoming = tmp_path / "incoming"
    incoming.mkdir()
    np.save(incoming / "peaks.npy", np.arange(40.0).reshape(8, 5))
    pd.DataFrame({"e": [1.0, 2.0], "mu": [0.1, 0.2]}).to_csv(
        incoming / "spectrum 1.csv", index=False
    )
    (incoming / "notes.txt").write_text("not ingested")
    store = ["--store", str(tmp_path / "store")]
    parent = "0f3c5a8e-9b1d-4c2e-8a7f-1d2e3f4a5b6c"
    monkeypatch.setenv("BAS_LOCAL_SERVER", "1")  # the commands' environment
    try:
        _save_show_search_lineage(tmp_path, incoming, store, parent)
    finally:
        stopped = _bas("stop-server", *store, cwd=tmp_path)
    assert stopped.stdout.startswith(f"stopped the local server of {tmp_path / 'store'} (pid ")


def _save_show_search_lineage(tmp_path: Path, incoming: Path, store: list[str], parent: str):
    saved = _bas(
        "save", str(incoming), "--name", "ingest", "--parent", parent, *store, cwd=tmp_path
    )
    assert saved.returncode == 0, saved.stderr
    uid = saved.stdout.strip()
    assert len(uid) == 36

    shown = _bas("show", uid[:8], *store, cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert f"uid:       {uid}" in shown.stdout
    assert f"parents:   {parent}" in shown.stdout
    assert re.search(rf"^page:      http://127\.0\.0\.1:\d+/lineage/{uid}$", shown.stdout, re.M)
    assert "  peaks/data  shape (1, 8, 5)" in shown.stdout
    assert "  spectrum_1/data  shape (1, 2)" in shown.stdout

    found = _bas("search", "--derived-from", parent, "--analysis", "ingest", *store, cwd=tmp_path)
    assert found.stdout.splitlines() == [f"{uid}  ingest 0.1.0"]

    graph = _bas("lineage", uid, "--output", "g.svg", *store, cwd=tmp_path)
    assert graph.returncode == 0, graph.stderr
    assert f"{parent[:8]}  not found  [missing]" in graph.stdout
    assert (tmp_path / "g.svg").read_text().startswith("<svg")

    missing = _bas("show", "abcdef12", *store, cwd=tmp_path)
    assert missing.returncode == 1
    assert missing.stderr.splitlines()[-1] == "bas show: error: No match for partial_uid abcdef12"


def _snapshot(directory: Path) -> dict[str, tuple[object, ...]]:
    """Every entry under ``directory``: kind, size, mtime (what any write would change)."""
    return {
        str(path.relative_to(directory)): (
            path.is_dir(),
            path.lstat().st_size,
            path.lstat().st_mtime_ns,
        )
        for path in sorted(directory.rglob("*"))
    }


def test_every_read_command_works_with_the_read_only_key(bas_server, monkeypatch, capsys):
    """``show``, ``search``, ``lineage`` and ``fsck`` against a real ``bas serve`` with its
    read-only key; with either key they create nothing (no ``raw`` container, no file)."""
    import numpy as np
    from helpers import make_provenance
    from served import READ_KEY, WRITE_KEY
    from tiled.client import from_uri

    from bluesky_analysis_store.cli import main

    root = bas_server.directory / "files"
    with bas_server.store(WRITE_KEY) as store:
        uid = store.save(
            [{"primary": {"image": np.ones((3, 2), "f4")}}],
            {},
            provenance=make_provenance(parameters={"read key": bas_server.backend}),
        )
        lineage_hash = store[uid].metadata["start"]["lineage_hash"]
    client = from_uri(bas_server.uri, api_key=WRITE_KEY)
    try:
        containers = list(client)
        files = _snapshot(root)
        store_options = ["--store", bas_server.uri, "--root", str(root)]
        for key in (READ_KEY, WRITE_KEY):
            monkeypatch.setenv("BAS_API_KEY", key)
            assert main(["show", uid, *store_options]) == 0
            assert f"uid:       {uid}" in capsys.readouterr().out
            assert main(["search", "--lineage", lineage_hash, *store_options]) == 0
            assert capsys.readouterr().out.startswith(uid)
            assert main(["lineage", uid, *store_options]) == 0
            assert uid[:8] in capsys.readouterr().out
            assert main(["fsck", *store_options]) in (0, 1)  # others' debris is no error here
            captured = capsys.readouterr()
            assert "error" not in captured.err, captured.err
            assert f"and the files under {root}" in captured.out
        assert list(client) == containers  # no raw container, nothing created
        assert _snapshot(root) == files  # no lock file, no spool directory, nothing written
    finally:
        client.context.close()
