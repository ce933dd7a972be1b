"""Capture helpers against real git checkouts and real files, and their enforcement by compose."""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tracemalloc
import uuid
from pathlib import Path
from types import ModuleType, SimpleNamespace

import numpy as np
import pytest
from helpers import PARENT_UID, compose, make_provenance, reduce_spectrum

from bluesky_analysis_store import (
    Provenance,
    ProvenanceError,
    ProvenancePolicy,
    capture_code,
    capture_environment,
    capture_provenance,
    compose_analysis_run,
    describe_input_file,
    describe_parent,
)
from bluesky_analysis_store.provenance._capture import (
    KEY_PACKAGES,
    _distribution,
    git_state,
    sha256_file,
)

MiB = 1 << 20

MODULE_SOURCE = '''\
"""A stand-in analysis module, imported from its path."""

__version__ = "3.2"


def analyse(data):
    return data


def analyse_versioned(data):
    return data


analyse_versioned.version = "5.0"


class Analysis:
    def __init__(self, name="tmp_analysis", version="0.7"):
        self.name = name
        self.version = version

    def __call__(self, data):
        return data
'''

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def _git(directory: Path, *args: str) -> str:
    """Run git in ``directory`` with a throw-away identity; no global config is needed."""
    result = subprocess.run(
        [
            "git",
            "-c",
            "user.name=Capture Test",
            "-c",
            "user.email=capture-test@example.invalid",
            "-c",
            "commit.gpgsign=false",
            "-c",
            "init.defaultBranch=main",
            *args,
        ],
        cwd=directory,
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return result.stdout.strip()


def _tree(root: Path) -> dict[str, bytes | None]:
    """Every directory (None) and file (its bytes) under ``root``."""
    return {
        path.relative_to(root).as_posix(): path.read_bytes() if path.is_file() else None
        for path in sorted(root.rglob("*"))
    }


@pytest.fixture
def load_module():
    """Import a module from a file path under a unique name; forget it afterwards."""
    names: list[str] = []

    def load(path: Path) -> ModuleType:
        name = f"bas_capture_test_{uuid.uuid4().hex}"
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # inspect finds a class's file through sys.modules
        names.append(name)
        spec.loader.exec_module(module)
        return module

    yield load
    for name in names:
        sys.modules.pop(name, None)


@pytest.fixture
def git_repo(tmp_path: Path) -> Path:
    """A fresh git repository holding one committed analysis module, ``analysis.py``."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / "analysis.py").write_text(MODULE_SOURCE)
    _git(repo, "add", "analysis.py")
    _git(repo, "commit", "-q", "-m", "analysis")
    return repo


@pytest.fixture
def outside_module_path(tmp_path: Path) -> Path:
    """``analysis.py`` in a directory that belongs to no git checkout."""
    directory = tmp_path / "plain"
    directory.mkdir()
    if shutil.which("git") is not None:
        probe = subprocess.run(
            ["git", "rev-parse", "--show-toplevel"],
            cwd=directory,
            capture_output=True,
            text=True,
            timeout=30,
        )
        if probe.returncode == 0:
            pytest.skip(
                f"tmp_path {directory} is inside the git checkout {probe.stdout.strip()}; "
                "cannot test code outside any checkout here"
            )
    path = directory / "analysis.py"
    path.write_text(MODULE_SOURCE)
    return path


# --- code: commit and dirty flag from a real git checkout -------------------------------------


@needs_git
def test_capture_code_records_commit_and_dirty_state(git_repo, load_module):
    module = load_module(git_repo / "analysis.py")
    head = _git(git_repo, "rev-parse", "HEAD")
    assert re.fullmatch(r"[0-9a-f]{40}", head)

    clean = capture_code(module.analyse)
    assert clean.commit == head
    assert clean.dirty is False
    assert clean.module == module.__name__
    assert clean.qualname == "analyse"
    assert git_state(git_repo) == git_state(git_repo / "analysis.py") == (head, False)

    (git_repo / "scratch.txt").write_text("untracked notes\n")
    untracked_only = capture_code(module.analyse)
    assert (untracked_only.commit, untracked_only.dirty) == (head, False), (
        "an untracked file alone must not make the checkout dirty"
    )

    with open(git_repo / "analysis.py", "a") as f:
        f.write("\n# a local, uncommitted change\n")
    dirty = capture_code(module.analyse)
    assert dirty.commit == head
    assert dirty.dirty is True
    assert git_state(git_repo / "analysis.py") == (head, True)


@needs_git
def test_capture_code_of_a_class_and_of_a_module_uses_their_source_checkout(git_repo, load_module):
    module = load_module(git_repo / "analysis.py")
    head = _git(git_repo, "rev-parse", "HEAD")
    for analysis in (module, module.Analysis, module.Analysis()):
        code = capture_code(analysis)
        assert (code.commit, code.dirty) == (head, False), analysis


def test_capture_code_outside_any_checkout_has_no_commit(outside_module_path, load_module):
    module = load_module(outside_module_path)
    code = capture_code(module.analyse)
    assert code.commit is None
    assert code.dirty is None
    assert git_state(outside_module_path) == (None, None)
    assert git_state(outside_module_path.parent) == (None, None)


@needs_git
@pytest.mark.parametrize("ignored", [False, True], ids=["untracked", "gitignored"])
def test_code_that_no_commit_holds_is_not_reported_as_a_clean_commit(
    git_repo, load_module, ignored
):
    if ignored:
        (git_repo / ".gitignore").write_text("venv/\n")
        _git(git_repo, "add", ".gitignore")
        _git(git_repo, "commit", "-q", "-m", "ignore venv")
    site = git_repo / "venv" / "site-packages"
    site.mkdir(parents=True)
    (site / "thirdparty.py").write_text(MODULE_SOURCE)
    module = load_module(site / "thirdparty.py")
    code = capture_code(module.analyse)
    # Observed: commit == HEAD of git_repo and dirty is False.
    assert code.commit is None or code.dirty is not False


# --- code: name and version resolution --------------------------------------------------------


def test_name_and_version_overrides_win(outside_module_path, load_module):
    module = load_module(outside_module_path)
    for analysis in (module.analyse_versioned, module.Analysis("a", "1"), module):
        code = capture_code(analysis, name="custom_name", version="9.9")
        assert (code.name, code.version) == ("custom_name", "9.9"), analysis
    code = capture_code(reduce_spectrum, name="other")
    assert (code.name, code.version) == ("other", "1.0")  # each override stands alone


def test_instance_name_and_version_attributes(outside_module_path, load_module):
    module = load_module(outside_module_path)
    code = capture_code(module.Analysis("peak_fit", "1.4"))
    assert code.name == "peak_fit"
    assert code.version == "1.4"  # the instance's, not the module's __version__ 3.2
    assert code.qualname == "Analysis"
    assert code.module == module.__name__


def test_function_version_attribute_then_module_version(outside_module_path, load_module):
    module = load_module(outside_module_path)
    versioned = capture_code(module.analyse_versioned)
    assert (versioned.name, versioned.version) == ("analyse_versioned", "5.0")
    plain = capture_code(module.analyse)
    assert (plain.name, plain.version) == ("analyse", "3.2")  # the module's __version__
    helper = capture_code(reduce_spectrum)
    assert (helper.name, helper.version, helper.module) == ("reduce_spectrum", "1.0", "helpers")
    assert helper.qualname == "reduce_spectrum"


def test_installed_package_function_gets_the_distribution_version_and_url():
    code = capture_code(np.mean)
    assert code.name == "mean"
    assert code.module == "numpy"
    assert code.version == np.__version__ == importlib.metadata.version("numpy")
    assert code.url is not None
    assert code.url.startswith("http")


def _distribution_scanned(module_name: str) -> str | None:
    """What ``_distribution`` answered before its scan was cached: a fresh scan each time."""
    top = module_name.partition(".")[0]
    try:
        return importlib.metadata.distribution(top).metadata["Name"]
    except importlib.metadata.PackageNotFoundError:
        pass
    names = importlib.metadata.packages_distributions().get(top)
    return names[0] if names else None


def _notebook_function(data):
    return data


_notebook_function.__module__ = "__main__"  # as a function defined in a notebook cell


def test_cached_distribution_lookup_answers_as_a_fresh_scan(outside_module_path, load_module):
    script = load_module(outside_module_path)
    names = [
        "numpy.linalg",  # installed, named like its distribution
        "yaml",  # installed, named unlike its distribution (PyYAML): found through the scan
        "bluesky_analysis_store._version",
        "__main__",  # a notebook or script run as a program: no distribution
        script.__name__,  # a script imported from a file: no distribution
    ]
    for _ in range(2):  # the second round answers from the cache
        assert [_distribution(n) for n in names] == [_distribution_scanned(n) for n in names]
    assert _distribution("yaml") == "PyYAML"
    installed, from_script, notebook = (
        capture_code(f) for f in (np.mean, script.analyse, _notebook_function)
    )
    assert (installed.version, installed.url is not None) == (np.__version__, True)
    assert (from_script.version, from_script.url) == ("3.2", None)  # the module's __version__
    assert (notebook.version, notebook.url) == (None, None)
    for analysis, first in ((np.mean, installed), (_notebook_function, notebook)):
        assert capture_code(analysis) == first


def test_a_distribution_installed_while_the_process_runs_is_found(tmp_path, monkeypatch):
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    package = f"bas_late_{uuid.uuid4().hex[:8]}"
    assert _distribution(package) is None  # scanned (and cached) before it is installed
    # installed as an installer does: the package and a .dist-info directory naming its files
    (site / package).mkdir()
    (site / package / "__init__.py").write_text("")
    info = site / "late_distribution-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: late-distribution\nVersion: 1.0\n")
    (info / "RECORD").write_text(f"{package}/__init__.py,,\n")
    assert _distribution(package) == "late-distribution"


def test_module_passed_directly(outside_module_path, load_module):
    module = load_module(outside_module_path)
    code = capture_code(module)
    assert code.name == module.__name__
    assert code.module == module.__name__
    assert code.version == "3.2"
    assert code.qualname is None


# --- environment ------------------------------------------------------------------------------


def test_capture_environment():
    environment = capture_environment()
    assert environment.python == platform.python_version()
    assert environment.host == socket.gethostname()
    assert environment.platform == platform.platform()
    assert environment.user
    for package in ("bluesky-analysis-store", "event-model"):
        assert environment.packages[package] == importlib.metadata.version(package)


def _versions_read_now() -> dict[str, str]:
    versions = {}
    for package in KEY_PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def test_cached_package_versions_follow_an_upgrade_while_the_process_runs(tmp_path, monkeypatch):
    """The key packages' versions are read once per state of ``sys.path``: the same answers as
    reading them now, and a version installed mid-process (an upgrade shadowing the installed
    one) is seen by the next capture."""
    for _ in range(2):  # the second answers from the cache
        assert capture_environment().packages == _versions_read_now()
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    assert capture_environment().packages == _versions_read_now()  # sys.path changed
    info = site / "h5py-99.0.dist-info"  # installed as an installer does
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: h5py\nVersion: 99.0\n")
    assert capture_environment().packages["h5py"] == "99.0"
    assert capture_environment().packages == _versions_read_now()


# --- input files ------------------------------------------------------------------------------


def test_describe_input_file_matches_hashlib_and_stat(tmp_path):
    path = tmp_path / "raw.bin"
    content = os.urandom(300_000)
    path.write_bytes(content)
    described = describe_input_file(path)
    stat = os.stat(path)
    assert described.sha256 == hashlib.sha256(content).hexdigest() == sha256_file(path)
    assert described.size == stat.st_size == len(content)
    assert described.mtime == stat.st_mtime
    assert described.path == str(path.resolve())
    relative = describe_input_file(os.path.relpath(path))
    assert relative.path == str(path.resolve())


def test_describe_empty_input_file(tmp_path):
    path = tmp_path / "empty.bin"
    path.write_bytes(b"")
    described = describe_input_file(path)
    assert described.size == 0
    assert described.sha256 == hashlib.sha256(b"").hexdigest()


def test_sha256_file_streams_a_large_sparse_file(tmp_path):
    path = tmp_path / "big.bin"
    size = 200 * MiB
    with open(path, "wb") as f:
        f.write(b"head")
        f.seek(97 * MiB + 13)
        f.write(b"middle")
        f.truncate(size)
        f.seek(size - 4)
        f.write(b"tail")
    assert path.stat().st_size == size

    expected = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(4 * MiB):
            expected.update(chunk)

    started_here = not tracemalloc.is_tracing()
    if started_here:
        tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before, _ = tracemalloc.get_traced_memory()
        digest = sha256_file(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        if started_here:
            tracemalloc.stop()
    assert digest == expected.hexdigest()
    assert peak - before < 16 * MiB, f"sha256_file allocated {(peak - before) / MiB:.1f} MiB"


@pytest.mark.parametrize("kind", ["missing", "directory"])
def test_missing_input_file_is_refused_naming_the_path(tmp_path, kind):
    path = tmp_path / "nowhere" / "raw.h5"
    if kind == "directory":
        path.mkdir(parents=True)
    with pytest.raises(ProvenanceError, match=re.escape(str(path)) + ".* does not exist"):
        describe_input_file(path)


def test_capture_provenance_refuses_a_missing_input_file(tmp_path):
    present = tmp_path / "present.dat"
    present.write_bytes(b"x")
    missing = tmp_path / "missing.dat"
    with pytest.raises(ProvenanceError, match=re.escape(repr(str(missing))) + " does not exist"):
        capture_provenance(reduce_spectrum, inputs=[present, missing])


# --- parents ----------------------------------------------------------------------------------


@pytest.mark.parametrize("uid", ["not-a-uid", "", "1234", PARENT_UID + "0"])
def test_bad_parent_uid_is_refused(uid):
    with pytest.raises(ProvenanceError, match="does not look like a run uid"):
        describe_parent(uid)
    with pytest.raises(ProvenanceError, match="does not look like a run uid"):
        describe_parent({"uid": uid, "time": 0.0})


def test_capture_provenance_refuses_a_bad_parent_uid():
    with pytest.raises(ProvenanceError, match="'1234' does not look like a run uid"):
        capture_provenance(reduce_spectrum, parents=[PARENT_UID, "1234"])


def test_describe_parent_from_a_uid_string():
    parent = describe_parent(PARENT_UID, catalog="tiled://raw")
    assert parent.uid == PARENT_UID
    assert parent.catalog == "tiled://raw"
    assert parent.lineage_hash is None


def test_describe_parent_from_a_start_document_with_a_lineage_hash():
    lineage = hashlib.sha256(b"first analysis").hexdigest()
    start = {"uid": PARENT_UID, "time": 1.0, "lineage_hash": lineage, "analysis_name": "a"}
    parent = describe_parent(start)
    assert (parent.uid, parent.lineage_hash, parent.catalog) == (PARENT_UID, lineage, None)
    assert describe_parent({"start": start}) == parent  # a document bundle keyed by name


def test_describe_parent_from_a_run_with_metadata():
    lineage = hashlib.sha256(b"run").hexdigest()

    run = SimpleNamespace(metadata={"start": {"uid": PARENT_UID, "lineage_hash": lineage}})
    parent = describe_parent(run, catalog="cat")
    assert (parent.uid, parent.lineage_hash, parent.catalog) == (PARENT_UID, lineage, "cat")


def test_describe_parent_without_a_uid_is_a_type_error():
    for bad in (SimpleNamespace(metadata={"stop": {}}), {"time": 1.0}, 12):
        with pytest.raises(TypeError, match="cannot find a run uid"):
            describe_parent(bad)


# --- enforcement through compose: refused before anything is written -------------------------


def _data():
    return [{"primary": {"image": np.zeros((4, 4), "f4"), "x": 1.0}}]


WRITERS = {"image": "BAS_HDF5"}


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    root.mkdir()
    (root / "existing.txt").write_text("already here\n")
    return root


@pytest.fixture(scope="module")
def provenance() -> Provenance:
    """Valid provenance, captured once (capturing scans every installed distribution)."""
    return make_provenance()


def _assert_refused(root: Path, match: str, **kwargs) -> ProvenanceError:
    """Compose must raise ProvenanceError matching ``match`` and leave ``root`` untouched.

    Calls compose_analysis_run directly: helpers.compose captures fresh provenance on every
    call (its default is evaluated eagerly), which these tests always replace anyway.
    """
    before = _tree(root)
    with pytest.raises(ProvenanceError, match=match) as info:
        compose_analysis_run(_data(), {}, root=root, writers=WRITERS, **kwargs)
    assert _tree(root) == before
    return info.value


def test_valid_provenance_writes_the_file(root):
    """The control for the refusals below: the same call with good provenance writes a file."""
    before = _tree(root)
    run = compose(_data(), {}, root=root, writers=WRITERS)  # helpers' default provenance
    assert len(run.files) == 1
    assert run.files[0].is_relative_to(root)
    assert run.files[0].is_file()
    assert _tree(root) != before


def test_input_file_changed_after_it_was_recorded(tmp_path, root):
    raw = tmp_path / "raw.dat"
    raw.write_bytes(b"A" * 1000)
    provenance = make_provenance(inputs=[raw])
    raw.write_bytes(b"B" * 1000)  # same size, different bytes
    error = _assert_refused(root, "changed since it was recorded", provenance=provenance)
    assert str(raw.resolve()) in str(error)


def test_input_file_deleted_after_it_was_recorded(tmp_path, root):
    raw = tmp_path / "raw.dat"
    raw.write_bytes(b"A" * 1000)
    provenance = make_provenance(inputs=[raw])
    raw.unlink()
    _assert_refused(root, "does not exist", provenance=provenance)


def test_provenance_none_is_refused(root):
    _assert_refused(root, "provenance is required", provenance=None)


def test_provenance_dict_with_an_extra_key_is_malformed(root, provenance):
    document = provenance.model_dump(mode="json")
    document["extra"] = 1
    _assert_refused(root, "provenance is malformed: extra", provenance=document)
    document = provenance.model_dump(mode="json")
    document["code"]["extra"] = 1
    _assert_refused(root, "provenance is malformed: code.extra", provenance=document)


def test_provenance_of_the_wrong_type_is_refused(root):
    _assert_refused(root, "must be a Provenance or its JSON form", provenance="xas")


def test_no_parents_and_no_inputs_is_refused_by_default(root, provenance):
    orphan = provenance.model_copy(update={"parents": ()})
    _assert_refused(root, "neither parents nor inputs", provenance=orphan)


def test_strict_policy_refuses_code_outside_a_checkout(outside_module_path, load_module, root):
    module = load_module(outside_module_path)
    provenance = capture_provenance(module.analyse, parents=[PARENT_UID], parameters={"a": 1})
    assert provenance.code.commit is None
    _assert_refused(
        root,
        "not in a git checkout; this policy requires a clean commit",
        provenance=provenance,
        policy=ProvenancePolicy.strict(),
    )


@needs_git
def test_strict_policy_refuses_a_dirty_checkout(git_repo, load_module, root):
    module = load_module(git_repo / "analysis.py")
    clean = capture_provenance(module.analyse, parents=[PARENT_UID], parameters={"a": 1})
    assert clean.code.dirty is False
    with open(git_repo / "analysis.py", "a") as f:
        f.write("# uncommitted\n")
    provenance = capture_provenance(module.analyse, parents=[PARENT_UID], parameters={"a": 1})
    assert provenance.code.dirty is True
    _assert_refused(
        root,
        "has uncommitted changes; this policy requires a clean commit",
        provenance=provenance,
        policy=ProvenancePolicy.strict(),
    )
    # The clean capture, taken before the change, satisfies the strict policy.
    run = compose_analysis_run(
        _data(), {}, root=root, writers=WRITERS, provenance=clean, policy=ProvenancePolicy.strict()
    )
    assert run.documents[0][1]["provenance"]["code"]["commit"] == clean.code.commit


def test_required_parameters_must_not_be_empty(root, provenance):
    assert provenance.parameters == {}
    _assert_refused(
        root,
        "parameters are empty; this policy requires the analysis parameters",
        provenance=provenance,
        policy=ProvenancePolicy(require_parameters=True),
    )


def test_version_is_required_by_default(outside_module_path, load_module, root):
    module = load_module(outside_module_path)
    del module.__version__
    provenance = capture_provenance(module.analyse, parents=[PARENT_UID])
    assert provenance.code.version is None
    _assert_refused(root, "code.version is missing for 'analyse'", provenance=provenance)


@pytest.mark.parametrize(
    "rules",
    [
        {"require_parents_or_inputs": False},
        {"require_version": False},
        {"verify_inputs": False},
    ],
)
def test_weaker_policy_without_relaxed_is_refused(rules):
    with pytest.raises(ProvenanceError, match=r"ProvenancePolicy\.relaxed\(reason"):
        ProvenancePolicy(**rules)


@pytest.mark.parametrize("reason", ["", "   "])
def test_relaxed_needs_a_reason(reason):
    with pytest.raises(ProvenanceError, match="non-empty reason"):
        ProvenancePolicy.relaxed(reason, require_parents_or_inputs=False)


def test_relaxed_policy_admits_a_run_without_parents_and_records_why(root, provenance):
    policy = ProvenancePolicy.relaxed("reason", require_parents_or_inputs=False)
    orphan = provenance.model_copy(update={"parents": ()})
    run = compose_analysis_run(
        _data(), {}, root=root, writers=WRITERS, provenance=orphan, policy=policy
    )
    start = run.documents[0][1]
    assert start["provenance_policy"]["relaxed_because"] == "reason"
    assert start["provenance_policy"]["require_parents_or_inputs"] is False
    assert start["parent_uids"] == []
    assert start["provenance"]["parents"] == []
    assert len(run.files) == 1
    assert run.files[0].is_file()
