"""The edges of the machine: deep nesting, a full disk, forked processes, planted symlinks, a
table's index read by tiled alone, and typed errors everywhere (issue 11)."""

from __future__ import annotations

import ast
import builtins
import errno
import json
import multiprocessing
import os
import queue
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from event_model import Filler
from helpers import compose, figure, make_provenance

import bluesky_analysis_store
from bluesky_analysis_store import (
    AnalysisInputError,
    AnalysisStore,
    AnalysisStoreError,
    FileCollisionError,
    InputTypeError,
    MetadataPacket,
    NestingTooDeepError,
    ProtectedKeyError,
    StorageFullError,
    StoreInUseError,
    UnsafePathError,
    WriterClosedError,
    capture_provenance,
    default_registry,
    describe_parent,
    records_to_dataframe,
)
from bluesky_analysis_store.compose._compose import prepare_analysis_run
from bluesky_analysis_store.core._staging import StagedFiles
from bluesky_analysis_store.core._values import MAX_DEPTH, check_depth
from bluesky_analysis_store.store._locks import hold_embedded_store, release_embedded_store

TESTS = Path(__file__).parent
SPECS = ["BAS_HDF5", "BAS_NPY", "BAS_TIFF", "BAS_TABLE_HDF5"]


def _nest(levels: int, leaf: Any = 1) -> Any:
    """``levels`` mappings, one inside the other: {"a": {"a": ... leaf}}."""
    value = leaf
    for _ in range(levels):
        value = {"a": value}
    return value


def _depth(value: Any) -> int:
    levels = 0
    while isinstance(value, dict):
        value, levels = value["a"], levels + 1
    return levels


def _tree(root: Path) -> list[str]:
    """Every path under ``root`` but the store's own lock files."""
    return sorted(
        str(p.relative_to(root)) for p in root.rglob("*") if not p.name.startswith(".bas-")
    )


def _open_part_files(pid: int | str = "self") -> list[str]:
    """Files named ``*.part`` (deleted or not) that the process holds open."""
    held = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:  # closed meanwhile (e.g. the listing's own descriptor)
            continue
        if ".part" in target:
            held.append(target)
    return held


@pytest.fixture
def store(tiled_catalog):
    return AnalysisStore(tiled_catalog.new_runs_container(), tiled_catalog.new_root())


# --- 1. nesting: a typed error naming the key path, never a RecursionError ------------------


def test_md_nested_3000_deep_is_refused_naming_the_key_path(tmp_path):
    data = [{"primary": {"image": np.zeros(100)}}]
    with pytest.raises(NestingTooDeepError, match=r"^md\['deep'\]\['a'\]\['a'\].*levels deep"):
        compose(data, {"deep": _nest(3000)}, root=tmp_path)
    assert _tree(tmp_path) == []
    cycle: dict[str, Any] = {}
    cycle["self"] = cycle
    with pytest.raises(NestingTooDeepError, match=r"md\['cycle'\]\['self'\]\['self'\]"):
        compose(data, {"cycle": cycle}, root=tmp_path)
    packet = MetadataPacket()
    packet["deep"] = _nest(3000)
    with pytest.raises(NestingTooDeepError, match=r"md\['deep'\]"):
        compose(data, {}, root=tmp_path, packet=packet)
    assert _tree(tmp_path) == []
    assert issubclass(NestingTooDeepError, AnalysisInputError)
    assert issubclass(NestingTooDeepError, ValueError)


def test_parameters_nested_3000_deep_are_refused_in_every_form(tmp_path):
    deep = {"p": _nest(3000)}
    with pytest.raises(NestingTooDeepError, match=r"^parameters\['p'\]\['a'\]"):
        capture_provenance(
            compose, parents=["0f3c5a8e-9b1d-4c2e-8a7f-1d2e3f4a5b6c"], parameters=deep
        )
    as_json = make_provenance().model_dump(mode="json") | {"parameters": deep}
    with pytest.raises(NestingTooDeepError, match=r"^provenance\['parameters'\]\['p'\]"):
        compose([{"s": {"x": 1.0}}], {}, provenance=as_json)
    # the limit counts the levels of the start document above the parameters
    fits = {"p": _nest(MAX_DEPTH - 3)}  # parameters(1) + p's levels = MAX_DEPTH - 2
    assert compose([{"s": {"x": 1.0}}], {}, provenance=make_provenance(parameters=fits))
    with pytest.raises(NestingTooDeepError):
        make_provenance(parameters={"p": _nest(MAX_DEPTH - 2)})


def test_data_values_nested_3000_deep_are_a_typed_error(tmp_path):
    deep: Any = [1.0]
    for _ in range(3000):
        deep = [deep]
    for writers in (None, {"x": "BAS_HDF5"}):
        with pytest.raises(AnalysisInputError, match=r"data_dicts\[0\]\['s'\]\['x'\]"):
            compose([{"s": {"x": deep}}], {}, root=tmp_path, writers=writers)
    with pytest.raises(AnalysisInputError, match=r"data_dicts\[0\] must map stream names"):
        compose([deep], {}, root=tmp_path)
    assert _tree(tmp_path) == []


def test_md_at_the_limit_is_stored_and_read_back_through_tiled(store):
    md = {"deep": _nest(MAX_DEPTH - 1)}  # md itself is the first level
    uid = store.save([{"s": {"x": 1.0}}], md, provenance=make_provenance())
    assert _depth(store.runs[uid].metadata["start"]["deep"]) == MAX_DEPTH - 1
    with pytest.raises(NestingTooDeepError, match=rf"more than {MAX_DEPTH} levels"):
        store.save([{"s": {"x": 2.0}}], {"deep": _nest(MAX_DEPTH)}, provenance=make_provenance())
    assert len(store.runs) == 1


def test_check_depth_for_documents_is_iterative_and_quick_on_event_pages():
    page = {
        "descriptor": "d",
        "seq_num": list(range(50_000)),
        "time": [0.5] * 50_000,
        "data": {f"k{i}": list(range(50_000)) for i in range(8)},
        "timestamps": {f"k{i}": [0.5] * 50_000 for i in range(8)},
    }
    check_depth(page, "event_page")
    descriptor = {"configuration": {"det": {"data": _nest(5000)}}}
    with pytest.raises(NestingTooDeepError, match=r"^descriptor\['configuration'\]\['det'\]"):
        check_depth(descriptor, "descriptor")


# --- 2. a full disk: a typed error, every handle closed, every .part removed ----------------


@contextmanager
def _tmpfs(directory: Path, size: str) -> Iterator[Path]:
    """A real small file system mounted on ``directory`` (needs root), unmounted afterwards."""
    mount = shutil.which("mount")
    if mount is None or not sys.platform.startswith("linux"):
        pytest.skip("no mount(8) here; the RLIMIT_FSIZE test covers a full disk")
    done = subprocess.run(
        [mount, "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(directory)],
        capture_output=True,
        text=True,
    )
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}); RLIMIT_FSIZE covers it")
    try:
        yield directory
    finally:
        subprocess.run(["umount", str(directory)], check=True)


def _big_values(spec: str, n: int = 5) -> list[Any]:
    """About 6 MB in ``n`` values: more than the small file systems here hold."""
    if spec == "BAS_TABLE_HDF5":
        return [pd.DataFrame({"a": np.random.rand(150_000)}) for _ in range(n)]
    return [np.random.rand(400, 400) for _ in range(n)]


@pytest.mark.parametrize("spec", SPECS)
def test_a_disk_that_fills_during_a_save_is_a_typed_error_and_leaves_nothing(
    spec, tiled_catalog, capsys
):
    container = tiled_catalog.new_runs_container()
    with _tmpfs(tiled_catalog.new_root(), "2m") as root:  # an HDF5 chunk takes up to 1 MB
        store = AnalysisStore(container, root)
        values = _big_values(spec)
        data = [{"s": {"x": value}} for value in values]
        with pytest.raises(StorageFullError) as raised:
            store.save(data, {}, writers={"x": spec}, provenance=make_provenance())
        error = raised.value
        assert isinstance(error, OSError)
        assert isinstance(error, AnalysisStoreError)
        assert error.errno == errno.ENOSPC
        assert error.filename.endswith("/s/x" + default_registry()[spec].suffix)
        assert error.bytes_needed == sum(
            v.memory_usage(index=True).sum() if spec == "BAS_TABLE_HDF5" else v.nbytes
            for v in values
        )
        assert "nothing was stored" in str(error)
        assert _open_part_files() == []
        assert _tree(root) == []
        assert len(container) == 0
        # the process is healthy and the space free again: a save that fits succeeds
        uid = store.save(
            [{"s": {"x": values[0][:100] if spec != "BAS_TIFF" else np.ones((8, 8))}}],
            {},
            writers={"x": spec},
            provenance=make_provenance(),
        )
        assert store.runs[uid].metadata["stop"]["exit_status"] == "success"
    figure(
        capsys,
        "machine edges",
        "A disk that fills during a save (tmpfs of 2 MB) gives StorageFullError (ENOSPC); no "
        ".part file is left or held open, no run is inserted, the next save that fits succeeds",
        pair=spec,
        parts_left=0,
        parts_open=0,
        runs_inserted=0,
    )


_FSIZE_SCRIPT = r"""
import json, os, resource, signal, sys
sys.path.insert(0, sys.argv[1])
import numpy as np
from test_robustness import _big_values, _open_part_files, _tree
from helpers import compose
from bluesky_analysis_store import AnalysisDevice, StorageFullError
from pathlib import Path

root, limit = Path(sys.argv[2]), int(sys.argv[3])
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
results = []
for spec in sys.argv[4:]:
    values = _big_values(spec)
    try:
        compose([{"s": {"x": v}} for v in values], {}, root=root, writers={"x": spec})
        outcome = "saved"
    except StorageFullError as error:
        outcome = ["StorageFullError", error.errno, error.bytes_needed]
    device = AnalysisDevice(
        lambda: {"x": values[0]}, name="det", root=root, writers={"x": spec}
    )
    device_errors = []
    device.stage()
    try:
        for _ in values:
            device.trigger()
    except StorageFullError as error:
        device_errors.append(error.errno)
    try:
        device.unstage()
    except StorageFullError as error:
        device_errors.append(error.errno)
    results.append(
        {
            "spec": spec,
            "compose": outcome,
            "device": device_errors,
            "published": [str(p) for p in device.published],
            "open": _open_part_files(),
            "tree": _tree(root),
        }
    )
print(json.dumps(results))
"""


def test_a_file_size_limit_during_a_save_is_a_typed_error_and_leaves_nothing(tmp_path, capsys):
    """RLIMIT_FSIZE in a subprocess (SIGXFSZ ignored): writes past 1 MB fail with EFBIG."""
    root = tmp_path / "root"
    root.mkdir()
    done = subprocess.run(
        [sys.executable, "-c", _FSIZE_SCRIPT, str(TESTS), str(root), str(1 << 20), *SPECS],
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "TMPDIR": str(tmp_path)},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    assert [r["spec"] for r in results] == SPECS
    for result in results:
        assert result["compose"][:2] == ["StorageFullError", errno.EFBIG], result
        assert result["compose"][2] > 1 << 20
        assert errno.EFBIG in result["device"], result
        assert result["published"] == [], result
        assert result["open"] == [], result
        assert result["tree"] == [], result
    figure(
        capsys,
        "machine edges",
        "A file size limit met during a save (RLIMIT_FSIZE 1 MiB, EFBIG): StorageFullError from "
        "compose_analysis_run and from AnalysisDevice, nothing published, no .part left or open",
        pairs=len(results),
        parts_left=0,
        parts_open=0,
    )


# --- 3. a forked child: a typed error at once, not a hang -----------------------------------


def _open_in_child(directory: Path, other: Path, answers: Any) -> None:
    try:
        AnalysisStore.open(directory)
        answers.put(("opened", ""))
    except Exception as error:
        answers.put((type(error).__name__, str(error)))
    hold_embedded_store(other)  # an unrelated store is the child's to open
    release_embedded_store(other)
    answers.put(("other", "held"))


def test_a_forked_child_gets_a_typed_error_at_once(tmp_path):
    directory = tmp_path / "store"
    other = tmp_path / "other"
    other.mkdir()
    store = AnalysisStore.open(directory)
    context = multiprocessing.get_context("fork")
    answers = context.Queue()
    child = context.Process(target=_open_in_child, args=(directory, other, answers))
    try:
        child.start()
        try:
            kind, message = answers.get(timeout=120)  # the bug: the child hung here forever
            assert answers.get(timeout=60) == ("other", "held")
        except queue.Empty:
            pytest.fail("the forked child hung in AnalysisStore.open")
        child.join(timeout=60)
        assert child.exitcode == 0
    finally:
        if child.is_alive():
            child.kill()
        store.close()
    assert kind == "StoreInUseError", message
    assert f"is open in process {os.getpid()}, from which this process" in message
    assert "was forked" in message
    assert "through its local server" in message
    assert issubclass(StoreInUseError, AnalysisStoreError)


# --- 4. symlinks planted under the root are not followed out of it ---------------------------


def _roots(tmp_path: Path) -> tuple[Path, Path]:
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    return root, outside


def test_a_symlink_planted_at_the_run_directory_fails_the_save(store, tmp_path, capsys):
    outside = tmp_path / "outside"
    outside.mkdir()
    uid = "a1b2c3d4-0000-4000-8000-000000000001"
    (store.root / uid).symlink_to(outside, target_is_directory=True)
    with pytest.raises(UnsafePathError, match=rf"{uid}/s/x\.h5.*outside the root"):
        store.save([{"s": {"x": np.zeros(100)}}], {}, uid=uid, provenance=make_provenance())
    assert _tree(outside) == []
    assert len(store.runs) == 0
    figure(
        capsys,
        "path attacks",
        "A symlink planted at ROOT/UID pointing out of the store fails the save with "
        "UnsafePathError; nothing is written outside",
        files_outside=0,
    )


@pytest.mark.parametrize("planted", ["run directory", "stream directory"])
def test_a_symlink_planted_between_planning_and_writing_is_not_followed(tmp_path, planted):
    root, outside = _roots(tmp_path)
    data = [{"s": {"x": np.zeros(100), "t": np.ones((4, 4))}}]
    prepared = prepare_analysis_run(
        data, {}, root=root, writers={"t": "BAS_TIFF"}, provenance=make_provenance()
    )
    if planted == "run directory":
        link = root / prepared.uid
    else:
        (root / prepared.uid).mkdir()
        link = root / prepared.uid / "s"
    link.symlink_to(outside, target_is_directory=True)
    with pytest.raises(UnsafePathError, match=rf"{link} is a symbolic link"):
        prepared.write()
    assert _tree(outside) == []
    assert _open_part_files() == []
    assert link.is_symlink()  # what someone else planted is theirs to remove


def test_a_directory_swapped_for_a_symlink_while_writing_gets_nothing(tmp_path):
    """The writer opens its file through the directory held open (/proc/self/fd), so a name
    changed under it does not redirect the data; publishing then refuses."""
    root, outside = _roots(tmp_path)
    final = root / "uid" / "s" / "x.npy"
    staged = StagedFiles()
    temporary = staged.stage(final, root)
    (root / "uid" / "s").rename(root / "uid" / "moved")
    (root / "uid" / "s").symlink_to(outside, target_is_directory=True)
    with default_registry()["BAS_NPY"].writer(str(temporary)) as writer:
        writer(np.arange(10.0))
    with pytest.raises(UnsafePathError, match="was moved to"):
        staged.publish()
    staged.discard()  # what a save does when publishing fails
    assert _tree(outside) == []
    assert _tree(root / "uid" / "moved") == []  # the .part was removed from where it went


def test_stage_refuses_a_final_path_outside_its_root(tmp_path):
    root, outside = _roots(tmp_path)
    with StagedFiles() as staged, pytest.raises(UnsafePathError, match="is not inside the root"):
        staged.stage(outside / "x.h5", root)
    (root / "d").mkdir()
    (root / "d" / "x.h5").write_bytes(b"")
    with StagedFiles() as staged, pytest.raises(FileCollisionError, match="file exists"):
        staged.stage(root / "d" / "x.h5", root)


def test_device_refuses_a_symlink_planted_under_its_run_directory(tmp_path):
    from bluesky_analysis_store import AnalysisDevice

    root, outside = _roots(tmp_path)
    device = AnalysisDevice(lambda: {"image": np.zeros(100)}, name="det", root=root)
    device.run_uid = "run1"
    (root / "run1").mkdir()
    (root / "run1" / "det").symlink_to(outside, target_is_directory=True)
    device.stage()
    try:
        with pytest.raises(UnsafePathError, match="outside the root"):
            device.trigger()
    finally:
        device.unstage()
    assert _tree(outside) == []
    assert device.published == ()


# --- 5. a DataFrame's index, rebuilt by a plain tiled client ---------------------------------

TABLES = {
    "named": pd.DataFrame(
        {"mu": np.linspace(0, 1, 7), "n": np.arange(7, dtype="i4")},
        index=pd.Index(np.arange(7, dtype="u2") * 2, name="energy"),
    ),
    "unnamed": pd.DataFrame({"mu": np.linspace(0, 1, 5)}, index=pd.Index(np.arange(5.0)[::-1])),
    "named_index": pd.DataFrame(
        {"mu": np.linspace(0, 1, 4)}, index=pd.Index(np.arange(4, dtype="i8") + 10, name="index")
    ),
    "default": pd.DataFrame({"mu": np.linspace(0, 1, 3)}),
}


def _table_entries() -> list[dict[str, Any]]:
    return [{"t": {k: v * (i + 1) for k, v in TABLES.items()}} for i in range(2)]


def test_a_plain_tiled_client_rebuilds_the_dataframe_with_its_index(store):
    uid = store.save(_table_entries(), {}, provenance=make_provenance())
    stream = store.runs[uid]["t"]  # tiled's own client: no handler, no Filler
    for key, table in TABLES.items():
        data_key = stream.metadata["data_keys"][key]
        node = stream[key]
        for i, records in enumerate(node.read()):
            # the documented recipe, with pandas and tiled alone
            frame = pd.DataFrame.from_records(records)
            if (index := data_key.get("table_index")) is not None:
                frame = frame.set_index(index["field"]).rename_axis(index["name"])
            expected = table * (i + 1)
            pd.testing.assert_frame_equal(frame, expected, check_exact=True)
            pd.testing.assert_frame_equal(
                records_to_dataframe(records, data_key=data_key), expected, check_exact=True
            )
            assert frame.index.name == table.index.name
            assert frame.index.dtype == table.index.dtype
        if key == "default":
            assert "table_index" not in data_key
            assert node.structure().dims is None
        else:
            field = data_key["table_index"]["field"]
            assert node.structure().dims == ("time", field)


def test_filler_and_the_handler_still_rebuild_the_dataframe(tmp_path):
    run = compose(_table_entries(), {}, root=tmp_path, asset_form="resource")
    filled = []
    with Filler(default_registry().handler_registry(), inplace=False) as filler:
        for name, doc in run:
            name, doc = filler(name, doc)
            if name == "event":
                filled.append(doc["data"])
    assert len(filled) == 2
    for i, data in enumerate(filled):
        for key, table in TABLES.items():
            pd.testing.assert_frame_equal(data[key], table * (i + 1), check_exact=True)


def test_a_table_index_that_changes_within_a_key_is_refused_naming_it(tmp_path):
    first = TABLES["unnamed"]
    second = first.rename_axis("index")  # same dtype, but now named
    with pytest.raises(AnalysisInputError, match=r"index in field 'index' \(named\)"):
        compose([{"t": {"x": first}}, {"t": {"x": second}}], {}, root=tmp_path)
    assert _tree(tmp_path) == []


# --- 6. every error raised on purpose is a typed one -----------------------------------------


@pytest.mark.parametrize("spec", SPECS)
def test_writers_raise_typed_errors(spec, tmp_path):
    pair = default_registry()[spec]
    value = _big_values(spec, 1)[0]
    path = tmp_path / f"x{pair.suffix}"
    writer = pair.writer(str(path), **pair.resource_kwargs(value, pair.describe(value)))
    writer(value)
    writer.close()
    with pytest.raises(WriterClosedError, match="is closed"):
        writer(value)
    with pytest.raises(FileCollisionError, match="file exists"):
        pair.writer(str(path), **pair.resource_kwargs(value, pair.describe(value)))
    assert issubclass(WriterClosedError, ValueError)
    assert issubclass(FileCollisionError, FileExistsError)


def test_packet_and_parent_errors_are_typed():
    packet = MetadataPacket()
    with pytest.raises(ProtectedKeyError, match="'host' is protected") as raised:
        del packet["host"]
    assert isinstance(raised.value, KeyError)
    with pytest.raises(InputTypeError, match="cannot find a run uid") as raised_type:
        describe_parent({"time": 1.0})
    assert isinstance(raised_type.value, TypeError)


#: Built-in exceptions raised on purpose that stay so: the module protocol (``__getattr__``)
#: and an abstract method.
ALLOWED_BUILTIN_RAISES = {
    ("_lazy.py", "AttributeError"),  # a module __getattr__ must raise it
    ("_background.py", "AttributeError"),  # so must a class's __getattr__
    ("_procedures.py", "ValueError"),  # pydantic validators report with it (ProcedureError)
    ("_files.py", "NotImplementedError"),
    # pydantic validators report a problem by raising ValueError; load_campaign gathers them
    # into one ProcedureError
    ("_procedures.py", "ValueError"),
}
BUILTIN_EXCEPTIONS = {
    name
    for name, value in vars(builtins).items()
    if isinstance(value, type) and issubclass(value, BaseException)
}


def test_the_package_raises_no_bare_builtin_exception():
    package = Path(bluesky_analysis_store.__file__).parent
    found = set()
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Raise) or node.exc is None:
                continue
            exc = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
            if isinstance(exc, ast.Name) and exc.id in BUILTIN_EXCEPTIONS:
                found.add((path.name, exc.id))
    assert found - ALLOWED_BUILTIN_RAISES == set()
