"""Reliability: a save SIGKILLed at each step leaves nothing that looks complete, and ``bas fsck``
finds what it left and repairs it.

Each kill point is a real subprocess (the saving process dies with SIGKILL, so no ``finally``
and no ``except`` runs) on its own embedded store; they run concurrently, then the test process
inspects and repairs each store.
"""

from __future__ import annotations

import importlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import PARENT_UID, figure, make_provenance

from bluesky_analysis_store import AnalysisStore, ExitStatus
from bluesky_analysis_store._fsck import check_store, repair
from bluesky_analysis_store.cli import main

TESTS = Path(__file__).resolve().parent

#: One subprocess imports tiled once, waits for "go" on stdin, then forks one saving process per
#: kill point (argv: tests directory, then NAME=STORE_DIRECTORY=RUN_UID ...). Each child
#: monkeypatches its save to SIGKILL itself at its point; the parent reports how each ended.
KILLER = """
import os, signal, sys, threading, traceback
sys.path.insert(0, sys.argv[1])
import numpy as np
import bluesky_analysis_store._tiled_writer, tiled.server.app, tiled.catalog.adapter
from helpers import make_provenance
from bluesky_analysis_store import AnalysisStore
from bluesky_analysis_store._staging import StagedFiles

AFTER = {
    "after_descriptor": "descriptor",  # start and the first descriptor are in
    "after_events": "event_page",  # the first stream's events are in, the second's are not
}


def die():
    os.kill(os.getpid(), signal.SIGKILL)


def save_and_die(point, directory, uid):
    if point == "before_publish":  # files written under their .part names
        StagedFiles.publish = lambda self: die()
    else:
        original = AnalysisStore.insert

        def insert(self, name, doc):
            if point == "before_first_document" or (point == "before_stop" and name == "stop"):
                die()
            original(self, name, doc)
            if AFTER.get(point) == name:
                die()

        AnalysisStore.insert = insert
    store = AnalysisStore.open(directory)
    store.save(
        [{"primary": {"image": np.full((6, 4), i, "f4"), "x": float(i)}} for i in range(3)]
        + [{"fit": {"curve": np.linspace(0, 1, 30)}}],
        {},
        writers={"image": "BAS_HDF5", "curve": "BAS_NPY"},
        provenance=make_provenance(parameters={"kill": point}),
        uid=uid,
    )


assert sys.stdin.readline().strip() == "go"
assert threading.active_count() == 1, threading.enumerate()  # safe to fork
children = {}
for argument in sys.argv[2:]:
    point, directory, uid = argument.split("=")
    pid = os.fork()
    if pid == 0:
        try:
            save_and_die(point, directory, uid)
            print(f"{point}: saved, the kill point was never reached", flush=True)
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(1)
    children[pid] = point
for pid, point in children.items():
    _, status = os.waitpid(pid, 0)
    killed = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    print(f"{point} {'SIGKILL' if killed else status}", flush=True)
"""

KILL_POINTS = {
    # name: (a run node exists afterwards, files under their final names)
    "before_publish": (False, False),
    "before_first_document": (False, True),
    "after_descriptor": (True, True),
    "after_events": (True, True),
    "before_stop": (True, True),
}
UIDS = {name: f"00000000-0000-4000-8000-{n:012d}" for n, name in enumerate(KILL_POINTS)}


def _data() -> list[dict[str, dict[str, object]]]:
    return [
        {"primary": {"image": np.ones((6, 4), "f4"), "x": 1.0}},
        {"fit": {"curve": np.linspace(0, 1, 30)}},
    ]


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p != root / ".bas-lock")


@pytest.fixture(scope="module")
def killed_stores(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One embedded store per kill point, each left behind by a SIGKILLed save (and a fresh
    store, ``spare``, for the other tests)."""
    base = tmp_path_factory.mktemp("fsck")
    template = base / "template"
    template.mkdir()
    stores = {name: base / name for name in KILL_POINTS}
    environment = {**os.environ, "TMPDIR": str(base)}
    # tiled initializes a catalog in a subprocess of its own: do it once, beside the killer's
    # imports, and give every store a copy
    init = subprocess.Popen(
        [sys.executable, "-m", "tiled", "catalog", "init", f"sqlite:///{template / 'catalog.db'}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=environment,
    )
    arguments = [f"{name}={stores[name]}={UIDS[name]}" for name in KILL_POINTS]
    killer = subprocess.Popen(
        [sys.executable, "-c", KILLER, str(TESTS), *arguments],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment,
    )
    try:
        # meanwhile, this process pays its own tiled imports (they run beside the others)
        for module in ("bluesky_analysis_store._tiled_writer", "tiled.server.app"):
            importlib.import_module(module)

        init_output, _ = init.communicate(timeout=120)
        assert init.returncode == 0, init_output
        for directory in [*stores.values(), base / "spare"]:
            shutil.copytree(template, directory)
        out, err = killer.communicate("go\n", timeout=180)
    finally:
        killer.kill()  # only if still running after a failure
        init.kill()
    assert killer.returncode == 0, f"{out}\n{err}"
    endings = dict(line.split(" ", 1) for line in out.splitlines())
    assert endings == dict.fromkeys(KILL_POINTS, "SIGKILL"), f"{out}\n{err}"
    return {**stores, "spare": base / "spare"}


@pytest.mark.slow
@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_save_killed_at_each_step_is_found_and_repaired(point, killed_stores, capsys):
    directory = killed_stores[point]
    uid = UIDS[point]
    has_run, published = KILL_POINTS[point]
    root = directory / "files"
    left = _files(root)
    assert len(left) == 2  # image.h5 and curve.npy, or their .part temporaries
    assert all(p.name.endswith(".part") for p in left) is not published
    with AnalysisStore.open(directory) as store:
        # nothing looks complete
        complete_looking = len(store.derived_from(PARENT_UID)) + len(
            store.search(ExitStatus("success"))
        )
        assert complete_looking == 0
        assert (uid in store) is has_run
        for key in store:
            assert (store[key].metadata.get("stop") or {}).get("exit_status") != "success"
        # within the grace period it may still be being written: reported, never repaired
        report = check_store(store)
        assert report.clean
        assert [i.uid for i in report.in_progress] == ([uid] if has_run else [])
        assert sorted(report.recent_files) == left
        assert repair(store, report).repaired == 0
        assert _files(root) == left

    assert main(["fsck", "--store", str(directory), "--grace", "0"]) == 1
    out = capsys.readouterr().out
    incomplete = re.findall(r"^incomplete run (\S+): (.*)$", out, re.MULTILINE)
    assert [u for u, _ in incomplete] == ([uid] if has_run else [])
    assert all(reason.startswith("no stop document, started") for _, reason in incomplete)
    for path in left:
        assert f"orphaned file: {path}" in out
    (found,) = map(int, re.findall(r"^(\d+) problem\(s\)", out, re.MULTILINE))
    assert found == int(has_run) + len(left)

    assert main(["fsck", "--store", str(directory), "--repair", "--grace", "0"]) == 0
    out = capsys.readouterr().out
    assert ("deleted incomplete run " + uid in out) is has_run
    counts = re.search(r"^repaired: (\d+) run\(s\) deleted, (\d+) file\(s\) and (\d+)", out, re.M)
    assert counts is not None, out
    runs, files, directories = map(int, counts.groups())
    assert (runs, files) == (int(has_run), len(left))
    assert directories == 3  # UID/primary, UID/fit, UID
    assert "after repair: clean" in out
    left_after_repair = _files(root)
    assert left_after_repair == []
    assert [p.name for p in root.iterdir()] == [".bas-lock"]

    with AnalysisStore.open(directory) as store:
        second = check_store(store)  # a second check (the one `bas fsck` runs) is clean
        assert second.clean
        assert (second.complete, second.in_progress, second.recent_files) == ((), (), ())
        assert len(store) == 0
        # a normal save works afterwards
        saved = store.save(
            _data(),
            {},
            writers={"image": "BAS_HDF5", "curve": "BAS_NPY"},
            provenance=make_provenance(parameters={"kill": point}),
        )
        assert store.derived_from(PARENT_UID) == [saved]
        after = check_store(store, grace=0)
        assert after.clean
        assert after.complete == (saved,)
        assert len(_files(root)) == 2

    figure(
        capsys,
        "kill points",
        f"a save SIGKILLed {point.replace('_', ' ')}: no run looks complete, bas fsck lists "
        "what is left and --repair removes it; a new save then works",
        point=point,
        complete_looking=complete_looking,
        fsck_found=found,
        repaired=runs + files + directories,
        files_left_after_repair=len(left_after_repair),
    )


def test_failures_missing_files_symlinks_and_grace(killed_stores, tmp_path, capsys):
    directory = killed_stores["spare"]
    root = directory / "files"
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious.h5").write_bytes(b"keep me")
    with AnalysisStore.open(directory) as store:
        kept = store.save(_data(), {}, provenance=make_provenance(parameters={"run": "kept"}))
        damaged = store.save(_data(), {}, provenance=make_provenance(parameters={"run": "lost"}))
        failure = store.record_failure(make_provenance(), "RuntimeError: no peak")
        lost = root / damaged / "fit" / "curve.h5"
        lost.unlink()
        (root / "stray.txt").write_text("debris")
        (root / "empty" / "nested").mkdir(parents=True)
        (root / "link.h5").symlink_to(outside / "precious.h5")
        (root / "linked-dir").symlink_to(outside, target_is_directory=True)
        debris = sorted([root / "linked-dir", root / "link.h5", root / "stray.txt"])

        young = check_store(store)  # within the grace period: new debris is left alone
        assert young.problems == 1  # the missing file only
        assert sorted(young.recent_files) == debris
        assert young.empty_directories == ()

        report = check_store(store, grace=0)
        assert sorted(report.complete) == sorted([kept, damaged])
        assert report.recorded_failures == (failure,)  # on purpose: not a problem
        assert report.incomplete == report.in_progress == ()
        assert [(m.uid, m.path) for m in report.missing_files] == [(damaged, lost)]
        assert sorted(report.orphaned_files) == debris  # the lock directory is left alone
        assert report.empty_directories == (root / "empty" / "nested",)
        assert report.problems == 5
        assert f"recorded failure {failure}" in report.as_text()

        done = repair(store, report)
        assert done.deleted_runs == ()
        assert sorted(done.removed_files) == debris
        assert done.removed_directories == (root / "empty" / "nested", root / "empty")
        # symlinks were removed themselves: what they pointed to is intact
        assert (outside / "precious.h5").read_bytes() == b"keep me"
        assert sorted(store) == sorted([kept, damaged, failure])
        assert (root / kept / "primary" / "image.h5").exists()

        after = check_store(store, grace=0)
        assert after.problems == 1  # a missing file cannot be repaired: it stays a problem
        assert (after.missing_files, after.recorded_failures) == (
            report.missing_files,
            (failure,),
        )
    assert main(["fsck", "--store", str(directory), "--repair", "--grace", "0"]) == 1
    out = capsys.readouterr().out
    assert f"missing file of run {damaged}: {lost}" in out
    assert out.splitlines()[-2].startswith("1 problem(s): 0 incomplete run(s), 0 orphaned")
    assert out.splitlines()[-1].startswith("nothing to repair: missing files cannot be")
