"""``bas show/search/lineage`` make a bounded number of requests and import only what they use.

The requests are counted with tiled's own ``record_history`` (every request of a tiled client,
in process or over HTTP, goes through its transport); the commands run against a real
embedded store and a real ``bas serve``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import PARENT_UID, make_provenance
from tiled.client import record_history

from bluesky_analysis_store import AnalysisStore
from bluesky_analysis_store.cli import main

#: a child that runs ``bas`` and then prints the modules it imported, as JSON, last
MODULES = """
import json, sys
from bluesky_analysis_store.cli._commands import main
code = main(sys.argv[1:])
print(json.dumps(sorted(sys.modules)))
sys.exit(code)
"""


def _save_runs(
    store: AnalysisStore, keys: list[int], parents: list[str] | None = None
) -> list[str]:
    """One run per entry of ``keys``, with that many data keys (``parents``: its parents)."""
    return [
        store.save(
            [{"primary": {f"k{i}": np.full((2,), i, "f8") for i in range(n)}}],
            {},
            provenance=make_provenance(
                parameters={"keys": n}, **({"parents": parents} if parents else {})
            ),
        )
        for n in keys
    ]


def _requests(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """How many requests ``bas argv`` makes, and what it prints."""
    with record_history() as history:
        assert main(argv) == 0
    return len(history.requests), capsys.readouterr().out


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, list[str]]]:
    """An embedded store: runs of 3 and 30 keys; a run derived from 1 and one from 4 runs."""
    directory = tmp_path_factory.mktemp("cli-requests") / "store"
    with AnalysisStore.open(directory) as store:
        sized = _save_runs(store, [3, 30])
        few = _save_runs(store, [1], parents=sized[:1])
        many = _save_runs(store, [2], parents=[*sized, *few, PARENT_UID])
    return directory, {"sized": sized, "few": few, "many": many}


def test_show_makes_the_same_requests_for_3_keys_and_for_30(embedded, capsys):
    directory, uids = embedded
    store = ["--store", str(directory)]
    small, large = uids["sized"]
    counts = {}
    for uid, keys in ((small, 3), (large, 30)):
        for shown in (uid, uid[:8]):  # a full and a partial uid
            counts[shown], out = _requests(["show", shown, *store], capsys)
            assert f"uid:       {uid}" in out
            listed = [line for line in out.splitlines() if line.startswith("  primary/")]
            assert listed == [f"  primary/k{i}  shape (1, 2)" for i in range(keys)]
    assert counts[small] == counts[large] <= 6
    assert counts[small[:8]] == counts[large[:8]] <= 6


def test_search_and_lineage_requests_do_not_grow_with_parents(embedded, capsys):
    directory, uids = embedded
    store = ["--store", str(directory)]
    one, found = _requests(["search", "--analysis", "reduce_spectrum", *store], capsys)
    assert len(found.splitlines()) == 4
    assert one <= 5  # opening (4) and one search
    (few,), (many,) = uids["few"], uids["many"]
    lineage_few, text = _requests(["lineage", few, *store], capsys)
    assert "[missing]" in text  # the first runs' raw parent is in no catalog
    lineage_many, text = _requests(["lineage", many, *store], capsys)
    assert all(uid[:8] in text for uid in uids["sized"])
    # one search per generation of ancestors and per run for descendants, whatever the width
    assert lineage_many <= lineage_few + 1


def test_show_imports_no_compose_insert_pipeline_or_pairs(embedded):
    """Nothing of saving: composing, the insert pipeline, the pairs' writers (h5py, tifffile).

    (``event_model`` is still imported: bluesky-tiled-plugins' run client classes, which tiled
    picks for the runs, import its ``writing`` package.)"""
    directory, uids = embedded
    argv = ["show", uids["sized"][0], "--store", str(directory)]
    result = subprocess.run(
        [sys.executable, "-c", MODULES, *argv], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    modules = json.loads(result.stdout.splitlines()[-1])
    unused = (
        "bluesky_analysis_store.compose.",
        "bluesky_analysis_store.insert._insert",
        "bluesky_analysis_store.insert._sink",
        "bluesky_analysis_store.pairs._hdf5",
        "bluesky_analysis_store.pairs._tiff",
        "h5py",
        "tifffile",
    )
    assert [m for m in modules if m.startswith(unused)] == []


def test_the_parser_imports_no_store_module():
    code = (
        "import sys; from bluesky_analysis_store.cli._commands import build_parser; "
        "build_parser(); print(sorted(m for m in sys.modules if m.startswith("
        "('bluesky_analysis_store.store.', 'numpy'))))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("bas_server", ["sqlite"], indirect=True)
def test_served_show_requests_do_not_grow_with_keys(bas_server, monkeypatch, capsys):
    from served import WRITE_KEY

    with bas_server.store(WRITE_KEY) as store:
        small, large = _save_runs(store, [3, 30])
    monkeypatch.setenv("BAS_API_KEY", WRITE_KEY)
    options = ["--store", bas_server.uri, "--root", str(bas_server.directory / "files")]
    small_count, out = _requests(["show", small, *options], capsys)
    assert "  primary/k2  shape (1, 2)" in out
    large_count, out = _requests(["show", large, *options], capsys)
    assert "  primary/k29  shape (1, 2)" in out
    assert small_count == large_count <= 6
