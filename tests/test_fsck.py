"""Reliability: a save SIGKILLed at each step leaves nothing that looks complete, and ``bas fsck``
finds what it left and repairs it, destroying nothing.

Each kill point is a real subprocess (the saving process dies with SIGKILL, so no ``finally``
and no ``except`` runs) on its own embedded store; they run concurrently, then the test process
inspects and repairs each store. Repair moves what it removes into the store's quarantine; a
moved store, a store seen through another mount point, and spools outside the root or under
another name keep every file (the last with a real ``bas serve`` stopped mid-run).
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import re
import shutil
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
from helpers import PARENT_UID, figure, free_port, make_provenance
from served import WRITE_KEY, running_server

from bluesky_analysis_store import AnalysisStore, ExitStatus, compose_analysis_run
from bluesky_analysis_store.cli import main
from bluesky_analysis_store.core._errors import AnalysisStoreError
from bluesky_analysis_store.insert._spool import SPOOL_REGISTRY, registered_spools, spool_files
from bluesky_analysis_store.store._fsck import check_store, repair
from bluesky_analysis_store.store._locks import OPEN_LOCK_FILE
from bluesky_analysis_store.store._quarantine import QUARANTINE_DIRECTORY
from bluesky_analysis_store.store._relocation import LOCATION_FILE, moved_uri

TESTS = Path(__file__).resolve().parent

#: Spare embedded stores (copies of one initialized catalog) for the tests after the kill points.
SPARE = ("spare", "moved", "mounted", "readonly", "elsewhere", "unrecorded", "copied")

#: One subprocess imports tiled once, waits for "go" on stdin, then forks one saving process per
#: kill point (argv: tests directory, then NAME=STORE_DIRECTORY=RUN_UID ...). Each child
#: monkeypatches its save to SIGKILL itself at its point; the parent reports how each ended.
KILLER = """
import os, signal, sys, threading, traceback
sys.path.insert(0, sys.argv[1])
import numpy as np
import bluesky_analysis_store.insert._sink, tiled.server.app, tiled.catalog.adapter
from helpers import make_provenance
from bluesky_analysis_store import AnalysisStore
from bluesky_analysis_store.core._staging import StagedFiles

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
    """The files under a store's root, but its lock file and its quarantine."""
    quarantine = root / QUARANTINE_DIRECTORY
    return sorted(
        p
        for p in root.rglob("*")
        if p.is_file() and p != root / ".bas-lock" and not p.is_relative_to(quarantine)
    )


def _tree(directory: Path) -> dict[str, tuple[Any, ...]]:
    """Every entry under ``directory``: kind, size, content hash (or link target), mtime. The
    embedded store's open-lock file counts by name only: each open rewrites its holder line."""
    tree: dict[str, tuple[Any, ...]] = {}
    for path in sorted(directory.rglob("*")):
        status = path.lstat()
        name = str(path.relative_to(directory))
        if path.name == OPEN_LOCK_FILE:
            tree[name] = ("lock",)
        elif path.is_symlink():
            tree[name] = ("link", os.readlink(path), status.st_mtime_ns)
        elif path.is_dir():
            tree[name] = ("dir", status.st_mtime_ns)
        else:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            tree[name] = ("file", status.st_size, digest, status.st_mtime_ns)
    return tree


@pytest.fixture(scope="module")
def killed_stores(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One embedded store per kill point, each left behind by a SIGKILLed save (and fresh
    stores, :data:`SPARE`, for the other tests)."""
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
        for module in ("bluesky_analysis_store.insert._sink", "tiled.server.app"):
            importlib.import_module(module)

        init_output, _ = init.communicate(timeout=120)
        assert init.returncode == 0, init_output
        for directory in [*stores.values(), *(base / name for name in SPARE)]:
            shutil.copytree(template, directory)
        out, err = killer.communicate("go\n", timeout=180)
    finally:
        killer.kill()  # only if still running after a failure
        init.kill()
    assert killer.returncode == 0, f"{out}\n{err}"
    endings = dict(line.split(" ", 1) for line in out.splitlines())
    assert endings == dict.fromkeys(KILL_POINTS, "SIGKILL"), f"{out}\n{err}"
    return {**stores, **{name: base / name for name in SPARE}}


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

    contents = {path: path.read_bytes() for path in left}
    assert main(["fsck", "--store", str(directory), "--repair", "--grace", "0"]) == 0
    out = capsys.readouterr().out
    assert ("deleted incomplete run " + uid in out) is has_run
    pattern = r"^repaired: (\d+) run\(s\) deleted, (\d+) file\(s\) quarantined and (\d+)"
    counts = re.search(pattern, out, re.M)
    assert counts is not None, out
    runs, files, directories = map(int, counts.groups())
    assert (runs, files) == (int(has_run), len(left))
    assert directories == 3  # UID/primary, UID/fit, UID
    assert "after repair: clean" in out  # the quarantine is not counted
    left_after_repair = _files(root)
    assert left_after_repair == []
    assert sorted(p.name for p in root.iterdir()) == [".bas-lock", QUARANTINE_DIRECTORY]

    # nothing was destroyed: each file is in the quarantine, at its path in the store, and the
    # incomplete run's documents too; the manifest says what came from where
    (batch,) = (root / QUARANTINE_DIRECTORY).iterdir()
    manifest = json.loads((batch / "manifest.json").read_text())
    assert sorted(Path(entry["from"]) for entry in manifest["files"]) == left
    for entry in manifest["files"]:
        kept = batch / entry["to"]
        assert kept == batch / "files" / Path(entry["from"]).relative_to(root)
        assert kept.read_bytes() == contents[Path(entry["from"])]
    assert [entry["uid"] for entry in manifest["runs"]] == ([uid] if has_run else [])
    if has_run:
        lines = (batch / "runs" / f"{uid}.jsonl").read_text().splitlines()
        name, start = json.loads(lines[0])
        assert (name, start["uid"]) == ("start", uid)

    # --purge empties the quarantine, and says what it removed
    assert main(["fsck", "--store", str(directory), "--purge"]) == 0
    out = capsys.readouterr().out
    for entry in manifest["files"]:
        assert f"removed {batch / entry['to']}" in out
    assert f"purged the quarantine {root / QUARANTINE_DIRECTORY}: 1 batch(es)" in out
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
        "what is left and --repair moves it into the quarantine (--purge empties it); a new "
        "save then works",
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

        # a quarantine that is a symlink (planted to send files elsewhere) is refused
        (root / QUARANTINE_DIRECTORY).symlink_to(outside, target_is_directory=True)
        with pytest.raises(AnalysisStoreError, match="symlink"):
            repair(store, report)
        assert sorted(check_store(store, grace=0).orphaned_files) == debris  # nothing moved
        assert sorted(p.name for p in outside.iterdir()) == ["precious.h5"]
        (root / QUARANTINE_DIRECTORY).unlink()

        done = repair(store, report)
        assert done.deleted_runs == ()
        assert sorted(done.removed_files) == debris
        assert done.removed_directories == (root / "empty" / "nested", root / "empty")
        # symlinks were moved themselves: what they pointed to is intact
        assert (outside / "precious.h5").read_bytes() == b"keep me"
        assert done.quarantine is not None
        assert os.readlink(done.quarantine / "files" / "link.h5") == str(outside / "precious.h5")
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


def _save_two(store: AnalysisStore, label: str) -> list[str]:
    return [
        store.save(
            _data(),
            {},
            writers={"image": "BAS_HDF5", "curve": "BAS_NPY"},
            provenance=make_provenance(parameters={"run": f"{label}-{i}"}),
        )
        for i in range(2)
    ]


def _images(store: AnalysisStore, uids: list[str]) -> list[Any]:
    return [store[uid]["primary"]["image"].read() for uid in uids]


def test_a_moved_store_keeps_every_file_and_reads_again_where_it_is(killed_stores, capsys):
    """tiled records absolute paths. A moved (renamed) embedded store, opened read-only, is
    left as it is: fsck finds every file relative to the store, reports the move and changes
    nothing. Opened for writing (``bas fsck --repair``), the catalog's recorded paths are
    pointed to where the store is now: every run reads again, no file was touched, and repair
    quarantines only real debris."""
    directory = killed_stores["moved"]
    root = directory / "files"
    with AnalysisStore.open(directory) as store:
        uids = _save_two(store, "moved")
        images = _images(store, uids)
        (root / "stray.txt").write_text("debris")
        assert check_store(store, grace=0).moved == ()
    files = _files(root)
    renamed = directory.with_name("moved-renamed")
    new_root = renamed / "files"
    directory.rename(renamed)
    before = _tree(renamed)
    with AnalysisStore.open(renamed, read_only=True) as store:
        report = check_store(store, grace=0)
        assert sorted(report.complete) == sorted(uids)
        assert report.missing_files == ()  # not "missing at the old path"
        assert report.orphaned_files == (new_root / "stray.txt",)  # nor orphaned
        (moved,) = report.moved
        assert (moved.recorded_root, moved.files, moved.reachable) == (root, 4, 0)
        assert sorted(moved.runs) == sorted(uids)
        assert (report.embedded, report.problems, report.repairable) == (True, 2, 0)
        with pytest.raises(Exception, match="outside"):  # read-only: recorded paths only
            store[uids[0]]["primary"]["image"].read()
    assert main(["fsck", "--store", str(renamed), "--grace", "0"]) == 1
    out = capsys.readouterr().out
    assert f"the store was moved: 4 file(s) of 2 run(s) are recorded under {root}" in out
    assert "--repair points the recorded paths here" in out
    after = _tree(renamed)
    assert after == before, sorted(k for k in {*before, *after} if before.get(k) != after.get(k))

    assert main(["fsck", "--store", str(renamed), "--repair", "--grace", "0"]) == 0
    out = capsys.readouterr().out
    assert "the store was moved" not in out
    assert re.findall(r"^moved to the quarantine: (.*)$", out, re.M) == [
        str(new_root / "stray.txt")
    ]
    assert _files(new_root) == [
        new_root / p.relative_to(root) for p in files if p.name != "stray.txt"
    ]
    with AnalysisStore.open(renamed) as store:
        report = check_store(store, grace=0)
        assert (report.moved, report.clean) == ((), True)
        for read, saved in zip(_images(store, uids), images, strict=True):
            np.testing.assert_array_equal(read, saved)
        assert store[uids[0]]["fit"]["curve"].read().shape == (1, 30)  # NPY
        assert list(store[uids[0]]["primary"]["x"].read()) == [1.0]  # DuckDB tables
    assert not directory.exists()  # nothing made at the old place
    figure(
        capsys,
        "repair",
        "an embedded store renamed after two saves: read-only, fsck finds each file under the "
        "new name (none missing, none orphaned), reports the move and changes nothing; opened "
        "for writing (fsck --repair), its recorded paths point to the new place and both runs "
        "read again",
        runs=len(uids),
        files=moved.files,
        reported_missing=len(report.missing_files),
        store_files_reported_orphaned=0,
        store_files_changed=0,
        runs_read_after_the_move=len(uids),
    )


def _fill(item: Any, value: float) -> None:
    if isinstance(item, h5py.Dataset):
        item[...] = value


def test_a_copied_store_reads_its_own_files(killed_stores, tmp_path):
    """A copy of an embedded store, opened beside the original, reads the copy's files (not
    the original's: its catalog's paths point into the copy), and the original still reads."""
    directory = killed_stores["copied"]
    with AnalysisStore.open(directory) as store:
        uid = _save_two(store, "copy")[0]
    copy = tmp_path / "copied-store"
    shutil.copytree(directory, copy, symlinks=True)
    image = next((copy / "files" / uid).rglob("*.h5"))
    image.chmod(0o600)
    with h5py.File(image, "r+") as h5:  # only the copy's file is changed
        h5.visititems(lambda _, item: _fill(item, 7))
    with AnalysisStore.open(copy) as store:
        assert (store[uid]["primary"]["image"].read() == 7).all()
    with AnalysisStore.open(directory) as store:
        assert not (store[uid]["primary"]["image"].read() == 7).all()


def _can_bind_mount(tmp_path: Path) -> str | None:
    """None if ``unshare -m`` + ``mount --bind`` work here (root, Linux), else why not."""
    if shutil.which("unshare") is None:
        return "no unshare command"
    a, b = tmp_path / "probe-a", tmp_path / "probe-b"
    a.mkdir()
    b.mkdir()
    probe = subprocess.run(
        ["unshare", "-m", "mount", "--bind", str(a), str(b)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return None if probe.returncode == 0 else f"no private bind mounts here: {probe.stderr}"


def test_a_store_reached_through_another_mount_point_is_healthy(killed_stores, tmp_path, capsys):
    """The same store through a bind mount (a private mount namespace: nothing leaks): its
    runs read there, its files are the same files (the catalog is not changed), and only real
    debris is repaired."""
    if (why := _can_bind_mount(tmp_path)) is not None:
        pytest.skip(why)
    directory = killed_stores["mounted"]
    root = directory / "files"
    with AnalysisStore.open(directory) as store:
        uids = _save_two(store, "mounted")
        (root / "stray.txt").write_text("debris")
    files = _files(root)
    mount_point = tmp_path / "other-mount"
    mount_point.mkdir()
    # through the mount: every run reads (tiled reads the recorded paths, which lead to the
    # same files), then fsck --repair
    read = (
        "import sys; from bluesky_analysis_store import AnalysisStore\n"
        "with AnalysisStore.open(sys.argv[1]) as store:\n"
        "    print('read', [store[u]['primary']['image'].read().shape for u in sys.argv[2:]])"
    )
    script = (
        'mount --bind "$1" "$2" && "$3" -c "$4" "$2" "$5" "$6" && '
        'exec "$3" -m bluesky_analysis_store.cli "${@:7}"'
    )
    command = ["unshare", "-m", "bash", "-c", script, "bash", str(directory), str(mount_point)]
    command += [sys.executable, read, *uids]
    command += ["fsck", "--store", str(mount_point), "--repair", "--grace", "0"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "read [(1, 6, 4), (1, 6, 4)]" in result.stdout
    seen = mount_point / "files"
    assert (
        f"files of 2 run(s) are recorded under {root} and reached here under {seen} (another "
        "mount point or a symlinked path): the same files"
    ) in result.stdout
    assert "missing file of run" not in result.stdout
    orphans = re.findall(r"^orphaned file: (.*)$", result.stdout, re.M)
    assert orphans == [str(seen / "stray.txt")]
    assert f"moved to the quarantine: {seen / 'stray.txt'}" in result.stdout
    assert "after repair: clean" in result.stdout
    assert _files(root) == [p for p in files if p.name != "stray.txt"]
    with AnalysisStore.open(directory) as store:
        assert len(_images(store, uids)) == 2
    figure(
        capsys,
        "repair",
        "an embedded store checked and repaired through a bind mount of its directory: every "
        "file of its runs is found to be the same file, only the stray file is quarantined",
        runs=len(uids),
        files_of_runs=len(files) - 1,
        reported_orphaned=len(orphans),
        run_files_quarantined=len(files) - 1 - len(_files(root)),
    )


def test_a_check_and_the_read_commands_change_nothing(killed_stores, tmp_path, capsys):
    """``bas fsck`` (no --repair), ``show``, ``search`` and ``lineage`` create nothing: no
    container (not even ``raw``), no file, not the lock file; the directory tree and the
    catalog are byte for byte the same."""
    directory = killed_stores["readonly"]
    root = directory / "files"
    with AnalysisStore.open(directory) as store:
        (uid,) = _save_two(store, "readonly")[:1]
        (root / "stray.txt").write_text("debris")
        assert store.raw is None
    (root / ".bas-lock").unlink()
    before = _tree(directory)
    store_option = ["--store", str(directory)]
    assert main(["fsck", *store_option, "--grace", "0"]) == 1  # the stray file
    assert "orphaned file: " in capsys.readouterr().out
    assert main(["fsck", *store_option]) == 0  # within the grace period
    assert main(["show", uid[:8], *store_option]) == 0
    assert f"uid:       {uid}" in capsys.readouterr().out
    assert main(["search", "--analysis", "reduce_spectrum", *store_option]) == 0
    assert uid in capsys.readouterr().out
    assert main(["lineage", uid, *store_option]) == 0
    assert main(["fsck", *store_option, "--purge"]) == 0  # nothing to purge: nothing made
    assert "is empty: nothing to purge" in capsys.readouterr().out
    assert _tree(directory) == before

    with AnalysisStore.open(directory, raw="raw", read_only=True) as store:
        assert store.raw is None  # a missing raw catalog is not created
        with pytest.raises(AnalysisStoreError, match="read-only"):
            store.save(_data(), {}, provenance=make_provenance())
        with pytest.raises(AnalysisStoreError, match="read-only"):
            repair(store, check_store(store, grace=0))
    assert _tree(directory) == before
    absent = tmp_path / "no-store"
    with pytest.raises(AnalysisStoreError, match="no analysis store"):
        AnalysisStore.open(absent, read_only=True)
    assert not absent.exists()


def test_a_recorded_spool_that_cannot_be_read_here_keeps_every_file(killed_stores, tmp_path):
    """A store records each spool it is opened with; one that this machine cannot read (another
    host's disk) may hold runs whose files look orphaned here: repair moves no file."""
    directory = killed_stores["elsewhere"]
    root = directory / "files"
    spool = tmp_path / "spool"
    with AnalysisStore.open(directory, spool=spool) as store:
        (entry,) = registered_spools(root)
        assert (entry.spool, entry.root) == (spool, root)
        (root / "orphan.h5").write_bytes(b"maybe a spooled run's")
        with (root / SPOOL_REGISTRY).open("a") as registry:
            # the beamline machine's local disk, seen from nowhere else
            line = {"spool": "/local/spool", "root": "/mnt/store/files", "host": "another-host"}
            registry.write(json.dumps(line) + "\n")
        report = check_store(store, grace=0)
        assert report.unreadable_spools == (
            (Path("/local/spool"), "recorded by host another-host, not found here"),
        )
        assert report.orphaned_files == (root / "orphan.h5",)
        assert report.repairable == 0
        done = repair(store, report)
        assert done.removed_files == ()
        assert (root / "orphan.h5").exists()
    assert main(["fsck", "--store", str(directory), "--repair", "--grace", "0"]) == 1


@pytest.fixture
def fast_failing_client(monkeypatch: pytest.MonkeyPatch) -> None:
    """tiled's client retries a refused connection for up to 45 s by default."""
    import tiled.client.utils

    monkeypatch.setattr(tiled.client.utils, "TILED_RETRY_ATTEMPTS", 2)


@pytest.mark.slow
def test_repair_keeps_every_spooled_run_wherever_its_spool_lies(
    tmp_path, monkeypatch, fast_failing_client, capsys
):
    """A real ``bas serve`` goes away while one client (spool outside the root) is half way
    through a run and another (spool inside the root, under another name) saves a run.
    ``bas fsck --repair`` without ``--spool`` keeps both runs' files and both spool files; with
    the registry gone, the spool inside the root is still recognised by what it holds; then
    ``bas replay`` inserts both runs, and they read back."""
    monkeypatch.setenv("BAS_API_KEY", WRITE_KEY)
    monkeypatch.delenv("BAS_SPOOL", raising=False)
    directory, port = tmp_path / "served", free_port()
    root = directory / "files"
    outside, inside = tmp_path / "spool-outside", root / "my-spool"
    with ExitStack() as stack:
        servers = ExitStack()
        stack.callback(servers.close)
        server = servers.enter_context(running_server(directory, port, backend="sqlite"))
        uri = server.uri
        first = stack.enter_context(
            AnalysisStore.open(uri, api_key=WRITE_KEY, root=root, spool=outside)
        )
        second = stack.enter_context(
            AnalysisStore.open(uri, api_key=WRITE_KEY, root=root, spool=inside)
        )
        half = compose_analysis_run(
            _data(), {}, root=root, provenance=make_provenance(parameters={"spool": "half"})
        )
        documents = list(half)
        for name, doc in documents[:2]:  # start and descriptor go in
            first.insert(name, doc)
        servers.close()  # the server goes away
        for name, doc in documents[2:]:
            first.insert(name, doc)  # to the spool, nothing raised
        whole = second.save(_data(), {}, provenance=make_provenance(parameters={"spool": "whole"}))
        servers.enter_context(running_server(directory, port, backend="sqlite"))

        run_files = sorted([*half.files, *(p for p in _files(root) if whole in p.parts)])
        assert len(run_files) == 4
        contents = {path: path.read_bytes() for path in run_files}
        spooled = [*spool_files(outside), *spool_files(inside)]
        assert len(spooled) == 2
        (root / "stray.txt").write_text("debris")
        store = ["--store", uri, "--root", str(root)]

        assert main(["fsck", *store, "--grace", "0"]) == 1  # the stray file
        out = capsys.readouterr().out
        assert f"half-inserted run {half.uid} waits in the spool for `bas replay`" in out
        for path in spooled:
            assert f"spooled run, waiting for `bas replay`: {path}" in out
        assert main(["fsck", *store, "--repair", "--grace", "0"]) == 0
        out = capsys.readouterr().out
        assert re.findall(r"^moved to the quarantine: (.*)$", out, re.M) == [
            str(root / "stray.txt")
        ]
        assert all(path.read_bytes() == contents[path] for path in run_files)
        spool_files_kept = sum(path.exists() for path in spooled)
        assert spool_files_kept == 2

        # an older store never recorded its spools: one inside the root is found by content
        (root / SPOOL_REGISTRY).unlink()
        with AnalysisStore.open(uri, api_key=WRITE_KEY, root=root, read_only=True) as reader:
            report = check_store(reader, grace=0)
        assert report.spooled == tuple(spool_files(inside))
        whole_files = [p for p in run_files if whole in p.parts]
        assert not set(whole_files) & set(report.orphaned_files)

        replayed = 0
        for spool in (outside, inside):
            assert main(["replay", *store, "--spool", str(spool)]) == 0
            replayed += capsys.readouterr().out.count("inserted run ")
        assert replayed == 2
        with AnalysisStore.open(uri, api_key=WRITE_KEY, root=root, read_only=True) as reader:
            assert sorted(reader.derived_from(PARENT_UID)) == sorted([half.uid, whole])
            read = _images(reader, [half.uid, whole])
        for image in read:
            np.testing.assert_array_equal(image, np.ones((1, 6, 4), "f4"))
    figure(
        capsys,
        "repair",
        "a real bas serve stopped while one client (spool outside the root) is mid-run and "
        "another (spool inside the root, under another name) saves: fsck --repair without "
        "--spool keeps both runs' files and spool files, the spool inside the root is found by "
        "content without the registry, and bas replay inserts both runs, which read back",
        spooled_runs=len(spooled),
        run_files=len(run_files),
        run_files_quarantined=sum(not p.exists() for p in run_files),
        spool_files_kept=spool_files_kept,
        replayed=replayed,
        read_back=len(read),
    )


def test_a_served_store_moved_between_two_starts_reads_where_it_is(tmp_path, monkeypatch):
    """``bas serve`` on a store directory that was renamed since its last start points the
    catalog's recorded paths into the directory it serves now: every run reads there, and
    fsck through the server finds the store healthy."""
    monkeypatch.setenv("BAS_API_KEY", WRITE_KEY)
    directory, port = tmp_path / "served-before", free_port()
    with (
        running_server(directory, port, backend="sqlite") as server,
        AnalysisStore.open(
            server.uri, api_key=WRITE_KEY, root=directory / "files", spool=False
        ) as store,
    ):
        uids = _save_two(store, "served-move")
    moved = directory.with_name("served-after")
    directory.rename(moved)
    with running_server(moved, port, backend="sqlite") as server:
        root = moved / "files"
        with AnalysisStore.open(server.uri, api_key=WRITE_KEY, root=root, read_only=True) as store:
            for image in _images(store, uids):
                np.testing.assert_array_equal(image, np.ones((1, 6, 4), "f4"))
            report = check_store(store, grace=0)
            assert (report.moved, report.clean, sorted(report.complete)) == (
                (),
                True,
                sorted(uids),
            )
    assert "moved (or copied) from" in (moved.parent / f"{moved.name}.log").read_text()
    assert not directory.exists()


def test_a_store_older_than_its_location_record_is_found_where_it_was(killed_stores, tmp_path):
    """A store whose directory has no location record (made before it existed) is moved: the
    directory its catalog points into is read from the catalog itself, and it reads again."""
    directory = killed_stores["unrecorded"]
    with AnalysisStore.open(directory) as store:
        uids = _save_two(store, "unrecorded")
        images = _images(store, uids)
    (directory / LOCATION_FILE).unlink()
    moved = tmp_path / "unrecorded-moved"
    shutil.move(directory, moved)
    with AnalysisStore.open(moved) as store:
        for read, saved in zip(_images(store, uids), images, strict=True):
            np.testing.assert_array_equal(read, saved)
        assert check_store(store, grace=0).clean
    assert json.loads((moved / LOCATION_FILE).read_text()) == {"directory": str(moved)}


@pytest.mark.parametrize(
    ("uri", "moved"),
    [
        ("file://localhost/old/st/files/u/a.h5", "file://localhost/new/place/files/u/a.h5"),
        ("file:///old/st/data/a", "file:///new/place/data/a"),
        ("duckdb:////old/st/tables.duckdb", "duckdb:////new/place/tables.duckdb"),
        ("file://localhost/old/stx/files/a.h5", None),  # another directory, same prefix
        ("file://localhost/localhost/old/st", None),
        ("postgresql://user@host/tables", None),
    ],
)
def test_moved_uri_replaces_the_path_as_tiled_reads_it(uri, moved):
    assert moved_uri(uri, Path("/old/st"), Path("/new/place")) == moved
