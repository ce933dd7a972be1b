"""Check an analysis store for what an interrupted save leaves behind, and repair it.

A save writes files first (under ``.part`` temporary names, then published with ``os.link``),
then inserts the run's documents; a process killed in between leaves files no run refers to, or a
run without a successful stop document. :func:`check_store` finds them (and runs whose files
have gone missing); :func:`repair` removes incomplete runs and orphaned files. Anything that may
still be being written (a run started, or a file touched, less than ``grace`` seconds ago) is
reported as in progress and left alone.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse
from urllib.request import url2pathname

from ._locks import LOCK_FILE
from ._spool import SPOOL_DIRECTORY, spooled_documents

if TYPE_CHECKING:
    from ._store import AnalysisStore

#: Default grace period (seconds): younger runs and files may still be being written.
DEFAULT_GRACE = 600.0


@dataclass(frozen=True)
class RunIssue:
    """A run that is not complete (or is still being written).

    Attributes
    ----------
    uid : str
        The run's key in the store (its start document's uid).
    reason : str
        ``"no stop document"`` or ``"exit_status 'abort'"`` and the like.
    started : float or None
        The start document's ``time`` (seconds since the epoch), if any.
    files : tuple of Path
        Files the run's data sources refer to.
    """

    uid: str
    reason: str
    started: float | None
    files: tuple[Path, ...] = ()


@dataclass(frozen=True)
class MissingFile:
    """A file (or directory) that a complete run refers to but that does not exist."""

    uid: str
    path: Path


@dataclass(frozen=True)
class FsckReport:
    """What :func:`check_store` found. Only ``problems`` make a store unclean.

    Attributes
    ----------
    root : Path
        The store's file root that was scanned.
    grace : float
        Seconds: runs started and files touched more recently than this were left alone.
    checked_at : float
        When the check ran (seconds since the epoch).
    complete : tuple of str
        Uids of the runs whose stop document says ``exit_status == "success"``.
    recorded_failures : tuple of str
        Uids of failed-analysis records (:meth:`AnalysisStore.record_failure`: a stop with
        ``exit_status == "fail"`` and no data). Written on purpose; not problems.
    incomplete : tuple of RunIssue
        Runs with no stop document (older than ``grace``) or a stop that does not say success
        (and that are not recorded failures). Problems; :func:`repair` deletes them.
    in_progress : tuple of RunIssue
        Runs with no stop document yet, started less than ``grace`` ago. Left alone.
    unrecognized : tuple of str
        Nodes of the runs container without a start document (not written by a TiledWriter).
        Left alone, their files counted as referenced.
    orphaned_files : tuple of Path
        Files under the root that no complete run refers to: ``*.part`` leftovers, files of
        interrupted saves, files of incomplete runs. Problems; :func:`repair` removes them.
    empty_directories : tuple of Path
        Empty directories under the root (older than ``grace``). Problems; removed by repair.
    recent_files : tuple of Path
        Unreferenced files touched less than ``grace`` ago, or under an in-progress run's
        directory: perhaps a save being written. Left alone.
    missing_files : tuple of MissingFile
        Files that complete runs refer to but that do not exist. Problems that repair cannot
        fix (the data is gone): restore them from a backup.
    spooled : tuple of Path
        Spool files of runs waiting for ``bas replay``; the files they refer to are kept.
    """

    root: Path
    grace: float
    checked_at: float
    complete: tuple[str, ...] = ()
    recorded_failures: tuple[str, ...] = ()
    incomplete: tuple[RunIssue, ...] = ()
    in_progress: tuple[RunIssue, ...] = ()
    unrecognized: tuple[str, ...] = ()
    orphaned_files: tuple[Path, ...] = ()
    empty_directories: tuple[Path, ...] = ()
    recent_files: tuple[Path, ...] = ()
    missing_files: tuple[MissingFile, ...] = ()
    spooled: tuple[Path, ...] = ()

    @property
    def problems(self) -> int:
        """How many things are wrong: incomplete runs, orphaned files, empty directories and
        missing files."""
        return (
            len(self.incomplete)
            + len(self.orphaned_files)
            + len(self.empty_directories)
            + len(self.missing_files)
        )

    @property
    def repairable(self) -> int:
        """How many problems :func:`repair` can fix (all but missing files)."""
        return len(self.incomplete) + len(self.orphaned_files) + len(self.empty_directories)

    @property
    def clean(self) -> bool:
        """True if there is no problem (in-progress runs and recent files are not problems)."""
        return self.problems == 0

    def as_text(self) -> str:
        """A human-readable summary, one finding per line."""
        lines = [
            f"checked {len(self.complete) + len(self.recorded_failures) + len(self.incomplete)}"
            f" runs{f' (+{len(self.in_progress)} in progress)' if self.in_progress else ''} "
            f"and the files under {self.root} (grace {self.grace:g} s)",
            f"complete runs: {len(self.complete)}",
            f"recorded failures (not problems): {len(self.recorded_failures)}",
        ]
        lines += [f"  recorded failure {uid}" for uid in self.recorded_failures]
        lines += [
            f"in progress (started {_age(self.checked_at, issue.started)} ago, left alone): "
            f"{issue.uid}"
            for issue in self.in_progress
        ]
        lines += [f"spooled run, waiting for `bas replay`: {path}" for path in self.spooled]
        lines += [f"recent file (left alone): {path}" for path in self.recent_files]
        lines += [f"not a run (no start document, left alone): {key}" for key in self.unrecognized]
        lines += [
            f"incomplete run {issue.uid}: {issue.reason}"
            + (f", started {_age(self.checked_at, issue.started)} ago" if issue.started else "")
            + (f", {len(issue.files)} file(s)" if issue.files else "")
            for issue in self.incomplete
        ]
        lines += [f"orphaned file: {path}" for path in self.orphaned_files]
        lines += [f"empty directory: {path}" for path in self.empty_directories]
        lines += [
            f"missing file of run {missing.uid}: {missing.path}" for missing in self.missing_files
        ]
        lines.append(
            "clean"
            if self.clean
            else f"{self.problems} problem(s): "
            f"{len(self.incomplete)} incomplete run(s), {len(self.orphaned_files)} orphaned "
            f"file(s), {len(self.empty_directories)} empty director(y/ies), "
            f"{len(self.missing_files)} missing file(s)"
        )
        return "\n".join(lines)


@dataclass(frozen=True)
class RepairResult:
    """What :func:`repair` did.

    Attributes
    ----------
    deleted_runs : tuple of str
        Uids of the incomplete runs deleted from the catalog.
    removed_files : tuple of Path
        Orphaned files removed (a symlink is removed itself, never its target).
    removed_directories : tuple of Path
        Directories under the root removed because they were (or became) empty.
    skipped : tuple of (str, str)
        What was left alone after all, and why (e.g. a run completed since the check).
    """

    deleted_runs: tuple[str, ...] = ()
    removed_files: tuple[Path, ...] = ()
    removed_directories: tuple[Path, ...] = ()
    skipped: tuple[tuple[str, str], ...] = field(default=())

    @property
    def repaired(self) -> int:
        """Runs deleted plus files and directories removed."""
        return len(self.deleted_runs) + len(self.removed_files) + len(self.removed_directories)

    def as_text(self) -> str:
        """A human-readable account, one action per line."""
        lines = [f"deleted incomplete run {uid}" for uid in self.deleted_runs]
        lines += [f"removed file {path}" for path in self.removed_files]
        lines += [f"removed empty directory {path}" for path in self.removed_directories]
        lines += [f"left alone {what}: {why}" for what, why in self.skipped]
        lines.append(
            f"repaired: {len(self.deleted_runs)} run(s) deleted, {len(self.removed_files)} "
            f"file(s) and {len(self.removed_directories)} director(y/ies) removed"
            + (f", {len(self.skipped)} left alone" if self.skipped else "")
        )
        return "\n".join(lines)


def _age(now: float, then: float | None) -> str:
    if then is None:
        return "?"
    seconds = max(0.0, now - then)
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


def _touched(status: os.stat_result) -> float:
    """When a file was last written or linked (``os.link`` changes ctime, not mtime)."""
    return max(status.st_mtime, status.st_ctime)


def _path_from_uri(uri: str) -> Path | None:
    """The local path of a ``file:`` URI (``file:///p`` or ``file://localhost/p``), else None."""
    parsed = urlparse(uri)
    if parsed.scheme != "file" or parsed.netloc not in ("", "localhost"):
        return None
    return Path(os.path.normpath(url2pathname(parsed.path)))


def _data_source_files(node: Any) -> Iterator[tuple[Path, bool]]:
    """``(path, is_directory)`` of every ``file:`` asset of ``node`` and the nodes below it."""
    base = getattr(node, "base", node)  # a composite stream's plain container
    family = str(getattr(base, "structure_family", ""))
    if family.endswith(("container", "composite")):
        for _, child in base.items():
            yield from _data_source_files(child)
        return
    for data_source in base.data_sources() or ():
        for asset in data_source.assets:
            path = _path_from_uri(asset.data_uri)
            if path is not None:
                yield path, bool(asset.is_directory)


@dataclass
class _References:
    files: set[Path] = field(default_factory=set)
    directories: set[Path] = field(default_factory=set)
    ancestors: set[Path] = field(default_factory=set)  # directories leading to a reference

    def add(self, path: Path, is_directory: bool) -> None:
        (self.directories if is_directory else self.files).add(path)
        self.ancestors.update(path.parents)

    def covers(self, path: Path) -> bool:
        """``path`` is referenced, lies in a referenced directory, or leads to a reference
        (e.g. a symlinked directory that referenced paths go through)."""
        if path in self.files or path in self.directories or path in self.ancestors:
            return True
        return any(parent in self.directories for parent in path.parents)


def _classify(
    uid: str, run: Any, now: float, grace: float
) -> tuple[str, str, float | None, list[tuple[Path, bool]]]:
    """``(kind, reason, started, files)``; kind is complete/failure/incomplete/in_progress/
    unrecognized."""
    metadata = run.metadata
    start = metadata.get("start")
    if not start:
        return "unrecognized", "no start document", None, _files_or_empty(run)
    started = start.get("time")
    started = float(started) if isinstance(started, int | float) else None
    stop = metadata.get("stop") or {}
    status = stop.get("exit_status") if stop else None
    files = _files_or_empty(run)
    if status == "success":
        return "complete", "", started, files
    if status == "fail" and len(run) == 0:
        return "failure", "recorded failure", started, files
    if stop:
        return "incomplete", f"exit_status {status!r}", started, files
    if started is None or now - started < grace:
        return "in_progress", "no stop document yet", started, files
    return "incomplete", "no stop document", started, files


def _files_or_empty(run: Any) -> list[tuple[Path, bool]]:
    return list(_data_source_files(run))


def _walk_root(root: Path) -> Iterator[tuple[Path, bool, bool]]:
    """``(path, is_directory, is_empty)`` of every entry under ``root`` (not ``root`` itself,
    not the lock file, not the spool), never following symlinks: a symlink is an entry of its
    own."""
    for directory, dirnames, filenames in os.walk(root, topdown=True, followlinks=False):
        here = Path(directory)
        if here == root:
            if LOCK_FILE in filenames:
                filenames.remove(LOCK_FILE)
            if SPOOL_DIRECTORY in dirnames:
                dirnames.remove(SPOOL_DIRECTORY)
        for name in sorted(filenames):
            yield here / name, False, False
        for name in sorted(dirnames):
            path = here / name
            if path.is_symlink():  # os.walk lists it but does not enter it
                yield path, False, False
        if here != root:
            yield here, True, not os.listdir(here)


def _spooled_files(directory: Path, root: Path) -> tuple[list[Path], list[tuple[Path, bool]]]:
    """The spool files under ``directory`` and the data files their documents refer to."""
    spooled: list[Path] = []
    files: list[tuple[Path, bool]] = []
    for path, documents in spooled_documents(directory):
        spooled.append(path)
        for name, doc in documents:
            if name == "stream_resource" and isinstance(doc.get("uri"), str):
                if (found := _path_from_uri(doc["uri"])) is not None:
                    files.append((found, False))
            elif name == "resource" and isinstance(doc.get("resource_path"), str):
                base = Path(doc.get("root") or root)
                files.append((Path(os.path.normpath(base / doc["resource_path"])), False))
    return spooled, files


def check_store(store: AnalysisStore, *, grace: float = DEFAULT_GRACE) -> FsckReport:
    """Find incomplete runs, orphaned files and missing files of an analysis store.

    Read only: nothing is changed. Pass the result to :func:`repair` to fix what it lists.

    Parameters
    ----------
    store : AnalysisStore
        The store; its ``root`` must be readable here (it is where ``save`` writes).
    grace : float
        Seconds. A run without a stop document that started less than this ago, and an
        unreferenced file or directory touched less than this ago, may belong to a save still
        being written: they are reported as in progress (or recent) and are not problems.
        ``0`` treats everything as finished: use it only when nothing is writing.

    Returns
    -------
    FsckReport
    """
    if grace < 0:
        raise ValueError(f"grace must be >= 0 seconds, got {grace}")
    now = time.time()
    root = store.root
    found: dict[str, list[Any]] = {
        "complete": [],
        "failure": [],
        "incomplete": [],
        "in_progress": [],
        "unrecognized": [],
    }
    complete_refs = _References()  # complete runs, failures, foreign nodes: never removed
    protected_refs = _References()  # in-progress runs: left alone for now
    missing: list[MissingFile] = []
    in_progress_dirs: list[Path] = []
    spool_directories = {root / SPOOL_DIRECTORY, store.spool or root / SPOOL_DIRECTORY}
    spooled: list[Path] = []
    for directory in sorted(spool_directories):
        spool_files, referenced = _spooled_files(directory, root)
        spooled += spool_files
        for path, is_directory in referenced:  # waiting for a replay: never orphans
            complete_refs.add(path, is_directory)
    runs = store.runs.include_data_sources()
    for uid, run in runs.items():
        kind, reason, started, files = _classify(uid, run, now, grace)
        if kind in ("complete", "failure", "unrecognized"):
            found[kind].append(uid)
            for path, is_directory in files:
                complete_refs.add(path, is_directory)
                if kind == "complete" and not path.exists():
                    missing.append(MissingFile(uid, path))
            continue
        paths = tuple(dict.fromkeys(path for path, _ in files))
        found[kind].append(RunIssue(uid, reason, started, paths))
        if kind == "in_progress":
            for path, is_directory in files:
                protected_refs.add(path, is_directory)
            in_progress_dirs.append(root / uid)

    orphaned: list[Path] = []
    empty: list[Path] = []
    recent: list[Path] = []
    for path, is_directory, is_empty in _walk_root(root):
        if complete_refs.covers(path):
            continue
        try:
            touched = _touched(path.lstat())
        except FileNotFoundError:  # removed while we looked
            continue
        young = now - touched < grace
        shielded = protected_refs.covers(path) or any(
            path == d or path.is_relative_to(d) for d in in_progress_dirs
        )
        if is_directory:
            if shielded or young:
                continue
            if is_empty:
                empty.append(path)
            continue
        if shielded or young:
            recent.append(path)
        else:
            orphaned.append(path)
    return FsckReport(
        root=root,
        grace=grace,
        checked_at=now,
        complete=tuple(found["complete"]),
        recorded_failures=tuple(found["failure"]),
        incomplete=tuple(found["incomplete"]),
        in_progress=tuple(found["in_progress"]),
        unrecognized=tuple(found["unrecognized"]),
        orphaned_files=tuple(orphaned),
        empty_directories=tuple(empty),
        recent_files=tuple(recent),
        missing_files=tuple(missing),
        spooled=tuple(spooled),
    )


def _inside_root(path: Path, root: Path) -> bool:
    """``path`` is strictly under ``root`` and no directory on the way is a symlink."""
    if path == root or ".." in path.parts or not path.is_relative_to(root):
        return False
    return os.path.realpath(path.parent) == str(path.parent)


def _remove_empty_parents(start: Iterable[Path], root: Path, removed: list[Path]) -> None:
    """rmdir each directory and then its parents while they are empty (never ``root``, never
    through a symlink)."""
    for directory in sorted(set(start), key=lambda p: (-len(p.parts), str(p))):
        for candidate in (directory, *directory.parents):
            if not _inside_root(candidate, root):
                break
            try:
                if not stat.S_ISDIR(candidate.lstat().st_mode):
                    break
                candidate.rmdir()
            except OSError:  # not empty, or gone
                break
            removed.append(candidate)


def delete_run(run: Any) -> None:
    """Delete a run's node, its streams and their rows in tiled's own table storage (tiled
    never deletes external files: ours are removed as orphans, or reused by a replay)."""
    run.delete(recursive=True, external_only=False)


def repair(store: AnalysisStore, report: FsckReport) -> RepairResult:
    """Fix what ``report`` lists: delete incomplete runs, remove orphaned files and empty
    directories. Returns what was done.

    Conservative: in-progress runs and recent files are never touched; each incomplete run is
    re-read first and left alone if it has completed since the check; a file is left alone if
    it was touched within ``report.grace`` since, if it belongs to a run that could not be
    deleted, or if reaching it would follow a symlink out of the root. Only entries under
    ``store.root`` are removed; a symlink is removed itself, never what it points to. Files
    outside the root and missing files are reported, never touched.

    Runs are deleted with tiled's ``delete(recursive=True, external_only=False)``: the run node,
    its streams and their rows in tiled's own table storage go; tiled never deletes the
    external files (ours), which are removed here as orphans.
    """
    root = store.root
    if report.root != root:
        raise ValueError(f"the report is about {report.root}, not this store's root {root}")
    deleted: list[str] = []
    skipped: list[tuple[str, str]] = []
    kept_files: set[Path] = set()
    for issue in report.incomplete:
        try:
            run = store.runs[issue.uid]
        except KeyError:
            skipped.append((f"run {issue.uid}", "already gone"))
            continue
        stop = run.metadata.get("stop") or {}
        if stop.get("exit_status") == "success":
            skipped.append((f"run {issue.uid}", "completed since the check"))
            kept_files.update(issue.files)
            continue
        try:
            delete_run(run)
        except Exception as error:  # e.g. an API key without the delete:node scope
            skipped.append((f"run {issue.uid}", f"could not be deleted: {error}"))
            kept_files.update(issue.files)
            continue
        deleted.append(issue.uid)

    removed: list[Path] = []
    parents: set[Path] = set()
    now = time.time()
    for path in report.orphaned_files:
        if path in kept_files:
            skipped.append((f"file {path}", "its run was not deleted"))
            continue
        if not _inside_root(path, root):
            skipped.append((f"file {path}", "not inside the store's root"))
            continue
        try:
            status = path.lstat()
        except FileNotFoundError:
            continue
        if stat.S_ISDIR(status.st_mode):
            skipped.append((f"file {path}", "is now a directory"))
            continue
        if now - _touched(status) < report.grace:
            skipped.append((f"file {path}", "touched since the check"))
            continue
        path.unlink(missing_ok=True)  # a symlink: the link itself
        removed.append(path)
        parents.add(path.parent)

    for directory in report.empty_directories:
        try:
            if now - _touched(directory.lstat()) < report.grace:
                skipped.append((f"directory {directory}", "touched since the check"))
                continue
        except FileNotFoundError:
            continue
        parents.add(directory)
    directories: list[Path] = []
    _remove_empty_parents(parents, root, directories)
    return RepairResult(
        deleted_runs=tuple(deleted),
        removed_files=tuple(removed),
        removed_directories=tuple(directories),
        skipped=tuple(skipped),
    )
