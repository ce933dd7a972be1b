"""Check an analysis store for what an interrupted save leaves behind, and repair it safely.

A save writes files first (under ``.part`` temporary names, then published with ``os.link``),
then inserts the run's documents; a process killed in between leaves files no run refers to, or a
run without a successful stop document. :func:`check_store` finds them (and runs whose files
have gone missing); :func:`repair` moves orphaned files into the store's quarantine
(``ROOT/.bas-quarantine``, see :mod:`._quarantine`) and deletes incomplete runs from the catalog
after keeping their documents there too. Nothing is deleted until ``bas fsck --purge``.

What it never touches:

- files a complete run (or a recorded failure, or a node it does not recognise) refers to,
  identified relative to the store (:mod:`._locations`): a store that was moved, renamed or is
  reached through another mount point keeps its files; a store whose recorded paths no longer
  lead to its files (it was moved) is reported and not repaired at all, until it is opened
  for writing, which points its recorded paths to where it is (:mod:`._relocation`);
- files a spool holds or refers to, wherever the spool lies: the default ``ROOT/.bas-spool``,
  the spool the store was opened with, every spool recorded in ``ROOT/.bas-spools.jsonl``
  (:func:`register_spool`), and any spool file found under the root (recognised by what it
  holds, whatever its directory is called); a recorded spool that cannot be read here stops
  the repair from moving any file;
- anything that may still be being written (a run started, or a file touched, less than
  ``grace`` seconds ago, or a run whose spool file a live process holds locked).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import stat
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core._errors import AnalysisInputError, AnalysisStoreError
from ..core._files import inside_root, remove_empty_directories
from ..core._names import FSCK_GRACE, IMPORTED_KEY
from ..insert._spool import (
    SPOOL_DIRECTORY,
    SPOOL_REGISTRY,
    read_spool_file,
    registered_spools,
    spool_files,
)
from ._locations import Located, Locator, asset_files, document_file, recorded_root
from ._locks import LOCK_FILE
from ._quarantine import (
    QUARANTINE_DIRECTORY,
    Quarantine,
    check_quarantine,
    quarantine_contents,
)

if TYPE_CHECKING:
    from ._store import AnalysisStore

#: Default grace period (seconds): younger runs and files may still be being written.
DEFAULT_GRACE = FSCK_GRACE
#: Names under the root that belong to the store's machinery, never to a run.
_OWN_NAMES = frozenset({LOCK_FILE, SPOOL_REGISTRY, QUARANTINE_DIRECTORY, SPOOL_DIRECTORY})


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
        Files the run's data sources refer to (where they are in the store now).
    """

    uid: str
    reason: str
    started: float | None
    files: tuple[Path, ...] = ()


@dataclass(frozen=True)
class MissingFile:
    """A file (or directory) that a complete run refers to but that does not exist.

    ``path`` is where it would be in the store now; ``recorded`` is the path the catalog
    records, when that differs (the store was moved).
    """

    uid: str
    path: Path
    recorded: Path | None = None


@dataclass(frozen=True)
class MovedFiles:
    """Files the catalog (or a spool) records under another root than the store's own.

    Attributes
    ----------
    recorded_root : Path
        The root the paths were recorded under.
    files : int
        How many recorded paths point there (each found under the current root).
    reachable : int
        How many of them the recorded path still reaches here (another mount point or a
        symlinked path to the same files). When fewer than ``files``, the store was moved.
    runs : tuple of str
        The runs (or spooled runs) they belong to.
    """

    recorded_root: Path
    files: int
    reachable: int
    runs: tuple[str, ...]

    @property
    def moved(self) -> bool:
        """Some recorded paths no longer lead to the files: the store was moved or renamed."""
        return self.reachable < self.files


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
    embedded : bool
        The store is embedded: its tiled reads files here, at their recorded paths.
    complete : tuple of str
        Uids of the runs whose stop document says ``exit_status == "success"``.
    recorded_failures : tuple of str
        Uids of failed-analysis records (:meth:`AnalysisStore.record_failure`: a stop with
        ``exit_status == "fail"`` and no data). Written on purpose; not problems.
    incomplete : tuple of RunIssue
        Runs with no stop document (older than ``grace``) or a stop that does not say success
        (and that are not recorded failures or waiting in a spool). Problems; :func:`repair`
        deletes them from the catalog and keeps their documents in the quarantine.
    in_progress : tuple of RunIssue
        Runs with no stop document yet, started less than ``grace`` ago (or whose spool file a
        live process holds). Left alone.
    awaiting_replay : tuple of str
        Runs half inserted when the store went away, whose whole run (stop included) waits in
        a spool for ``bas replay``. Not problems; left alone.
    unrecognized : tuple of str
        Nodes of the runs container without a start document (not written by a TiledWriter).
        Left alone, their files counted as referenced.
    orphaned_files : tuple of Path
        Files under the root that no complete run or spool refers to: ``*.part`` leftovers,
        files of interrupted saves, files of incomplete runs. Problems; :func:`repair` moves
        them to the quarantine.
    empty_directories : tuple of Path
        Empty directories under the root (older than ``grace``). Problems; removed by repair.
    recent_files : tuple of Path
        Unreferenced files touched less than ``grace`` ago, or under an in-progress run's
        directory: perhaps a save being written. Left alone.
    missing_files : tuple of MissingFile
        Files that complete runs refer to but that do not exist. Problems that repair cannot
        fix (the data is gone): restore them from a backup.
    moved : tuple of MovedFiles
        Files recorded under another root than the current one, found under the current one.
        A moved embedded store opened read-only is a problem (its tiled cannot read them);
        opened for writing, its recorded paths are pointed to where it is now (see
        :mod:`._relocation`), so repair never sees one. Repair changes nothing while a store
        looks moved.
    spooled : tuple of Path
        Spool files of runs waiting for ``bas replay``; the files they refer to are kept.
    unreadable_spools : tuple of (Path, str)
        Spools the store recorded (``ROOT/.bas-spools.jsonl``) that cannot be read here, and
        why. Repair moves no file while one is listed: its runs' files may be among them.
    quarantined : int
        Files in the quarantine (``ROOT/.bas-quarantine``; ``bas fsck --purge`` empties it).
    lineage_index : str
        What is wrong with the catalog's lineage index (:mod:`._lineage_index`): missing, its
        triggers missing (a tiled migration drops them), or edges (or lineage hashes) missing
        or stale. Empty when it is exact, or cannot be checked (a server without the store's
        route). A served store's server checks it for this report. A problem; repair rebuilds
        it where this process reaches the catalog, a served store's server when it starts.
    index_here : bool
        Does this process reach the catalog (embedded, or a PostgreSQL catalog read directly),
        so that repair can rebuild the lineage index?
    """

    root: Path
    grace: float
    checked_at: float
    embedded: bool = False
    complete: tuple[str, ...] = ()
    recorded_failures: tuple[str, ...] = ()
    incomplete: tuple[RunIssue, ...] = ()
    in_progress: tuple[RunIssue, ...] = ()
    awaiting_replay: tuple[str, ...] = ()
    unrecognized: tuple[str, ...] = ()
    orphaned_files: tuple[Path, ...] = ()
    empty_directories: tuple[Path, ...] = ()
    recent_files: tuple[Path, ...] = ()
    missing_files: tuple[MissingFile, ...] = ()
    moved: tuple[MovedFiles, ...] = ()
    spooled: tuple[Path, ...] = ()
    unreadable_spools: tuple[tuple[Path, str], ...] = ()
    quarantined: int = 0
    lineage_index: str = ""
    index_here: bool = True

    @property
    def moved_away(self) -> tuple[MovedFiles, ...]:
        """The recorded roots whose paths no longer lead to the store's files."""
        return tuple(m for m in self.moved if m.moved)

    @property
    def problems(self) -> int:
        """How many things are wrong: incomplete runs, orphaned files, empty directories,
        missing files, and (embedded store) each root it was moved away from."""
        return (
            len(self.incomplete)
            + len(self.orphaned_files)
            + len(self.empty_directories)
            + len(self.missing_files)
            + (len(self.moved_away) if self.embedded else 0)
            + bool(self.lineage_index)
        )

    @property
    def repairable(self) -> int:
        """How many problems :func:`repair` can fix (none while the store looks moved)."""
        if self.moved_away:
            return 0
        files = 0 if self.unreadable_spools else len(self.orphaned_files)
        # a served store's index is rebuilt by its server as it starts, not by this process
        index = bool(self.lineage_index) and self.index_here
        return len(self.incomplete) + files + len(self.empty_directories) + index

    @property
    def clean(self) -> bool:
        """True if there is no problem (in-progress runs and recent files are not problems)."""
        return self.problems == 0

    def _moved_lines(self) -> list[str]:
        lines = []
        for moved in self.moved:
            runs = f"{len(moved.runs)} run(s)"
            if not moved.moved:
                lines.append(
                    f"files of {runs} are recorded under {moved.recorded_root} and reached here "
                    f"under {self.root} (another mount point or a symlinked path): the same files"
                )
                continue
            lines.append(
                f"the store was moved: {moved.files - moved.reachable} file(s) of {runs} are "
                f"recorded under {moved.recorded_root}, which no longer leads to them; found "
                f"under {self.root}"
            )
            if self.embedded:
                lines.append(
                    "  tiled reads each file at its recorded path: these runs cannot be read "
                    "until the store is opened for writing once; --repair points the recorded "
                    "paths here (no file is changed)"
                )
            else:
                lines.append(
                    f"  if the server sees the files under {moved.recorded_root}, nothing is "
                    "wrong there; --repair changes nothing here: run `bas fsck` where the "
                    "recorded paths are valid (`bas serve` points them into its directory "
                    "when it starts)"
                )
        return lines

    def as_text(self) -> str:
        """A human-readable summary, one finding per line."""
        checked = len(self.complete) + len(self.recorded_failures) + len(self.incomplete)
        lines = [
            f"checked {checked} runs"
            f"{f' (+{len(self.in_progress)} in progress)' if self.in_progress else ''} "
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
        lines += self._moved_lines()
        lines += [f"spooled run, waiting for `bas replay`: {path}" for path in self.spooled]
        lines += [
            f"half-inserted run {uid} waits in the spool for `bas replay` (left alone)"
            for uid in self.awaiting_replay
        ]
        lines += [
            f"spool {path} cannot be read here ({why}): --repair moves no file"
            for path, why in self.unreadable_spools
        ]
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
            f"missing file of run {missing.uid}: {missing.path}"
            + (f" (recorded as {missing.recorded})" if missing.recorded else "")
            for missing in self.missing_files
        ]
        if self.quarantined:
            lines.append(
                f"quarantine: {self.quarantined} file(s) under {self.root / QUARANTINE_DIRECTORY}"
                " (not problems; `bas fsck --purge` empties it)"
            )
        if self.lineage_index:
            how = (
                "--repair rebuilds it" if self.index_here else "restart `bas serve`: it rebuilds it"
            )
            lines.append(f"lineage index: {self.lineage_index} ({how})")
        moved = len(self.moved_away) if self.embedded else 0
        lines.append(
            "clean"
            if self.clean
            else f"{self.problems} problem(s): "
            f"{len(self.incomplete)} incomplete run(s), {len(self.orphaned_files)} orphaned "
            f"file(s), {len(self.empty_directories)} empty director(y/ies), "
            f"{len(self.missing_files)} missing file(s)"
            + (f", moved away from {moved} root(s)" if moved else "")
            + (", the lineage index" if self.lineage_index else "")
        )
        return "\n".join(lines)


@dataclass(frozen=True)
class RepairResult:
    """What :func:`repair` did.

    Attributes
    ----------
    deleted_runs : tuple of str
        Uids of the incomplete runs deleted from the catalog (their documents are kept in the
        quarantine, ``runs/<uid>.jsonl``).
    removed_files : tuple of Path
        Orphaned files moved into the quarantine (a symlink is moved itself, never its
        target), by their paths in the store.
    removed_directories : tuple of Path
        Directories under the root removed because they were (or became) empty.
    skipped : tuple of (str, str)
        What was left alone after all, and why (e.g. a run completed since the check).
    quarantine : Path or None
        The quarantine batch that holds what was removed (None: nothing was).
    rebuilt_lineage_index : bool
        The lineage index was rebuilt (its triggers reinstalled, every edge recomputed).
    """

    deleted_runs: tuple[str, ...] = ()
    removed_files: tuple[Path, ...] = ()
    removed_directories: tuple[Path, ...] = ()
    skipped: tuple[tuple[str, str], ...] = field(default=())
    quarantine: Path | None = None
    rebuilt_lineage_index: bool = False

    @property
    def repaired(self) -> int:
        """Runs deleted plus files and directories removed (plus one for a rebuilt index)."""
        return (
            len(self.deleted_runs)
            + len(self.removed_files)
            + len(self.removed_directories)
            + self.rebuilt_lineage_index
        )

    def as_text(self) -> str:
        """A human-readable account, one action per line."""
        lines = [f"deleted incomplete run {uid} (documents kept)" for uid in self.deleted_runs]
        lines += [f"moved to the quarantine: {path}" for path in self.removed_files]
        lines += [f"removed empty directory {path}" for path in self.removed_directories]
        lines += [f"left alone {what}: {why}" for what, why in self.skipped]
        if self.rebuilt_lineage_index:
            lines.append("rebuilt the lineage index")
        lines.append(
            f"repaired: {len(self.deleted_runs)} run(s) deleted, {len(self.removed_files)} "
            f"file(s) quarantined and {len(self.removed_directories)} director(y/ies) removed"
            + (f", {len(self.skipped)} left alone" if self.skipped else "")
        )
        if self.quarantine is not None:
            lines.append(
                f"quarantine: {self.quarantine} (manifest.json says what came from where; "
                "`bas fsck --purge` deletes it for good)"
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


@dataclass
class _References:
    """Paths under the current root (and file identities) that must not be removed."""

    files: set[Path] = field(default_factory=set)
    directories: set[Path] = field(default_factory=set)
    ancestors: set[Path] = field(default_factory=set)  # directories leading to a reference
    identities: set[tuple[int, int]] = field(default_factory=set)  # (st_dev, st_ino)

    def add(self, path: Path, is_directory: bool) -> None:
        (self.directories if is_directory else self.files).add(path)
        self.ancestors.update(path.parents)
        with contextlib.suppress(OSError):
            status = path.stat()
            if stat.S_ISREG(status.st_mode):  # the same file under another name (a hard link)
                self.identities.add((status.st_dev, status.st_ino))

    def covers(self, path: Path, status: os.stat_result | None = None) -> bool:
        """``path`` is referenced, lies in a referenced directory, leads to a reference (e.g.
        a symlinked directory that referenced paths go through), or is a referenced file."""
        if path in self.files or path in self.directories or path in self.ancestors:
            return True
        if any(parent in self.directories for parent in path.parents):
            return True
        return (
            status is not None
            and stat.S_ISREG(status.st_mode)
            and (status.st_dev, status.st_ino) in self.identities
        )


def _classify(run: Any, now: float, grace: float) -> tuple[str, str, float | None]:
    """``(kind, reason, started)``; kind is complete/failure/incomplete/in_progress/
    unrecognized."""
    metadata = run.metadata
    start = metadata.get("start")
    if not start:
        return "unrecognized", "no start document", None
    started = start.get("time")
    started = float(started) if isinstance(started, int | float) else None
    stop = metadata.get("stop") or {}
    status = stop.get("exit_status") if stop else None
    if status == "success":
        return "complete", "", started
    if status == "fail" and len(run) == 0:
        return "failure", "recorded failure", started
    if status == "abort" and start.get(IMPORTED_KEY) and len(run) == 0:
        # a lineage record of bas import-prov: its data are elsewhere by design
        return "complete", "imported lineage record", started
    if stop:
        return "incomplete", f"exit_status {status!r}", started
    if started is None or now - started < grace:
        return "in_progress", "no stop document yet", started
    return "incomplete", "no stop document", started


# ------------------------------------------------------------------------------ the spools


@dataclass(frozen=True)
class _SpoolFile:
    """One spool file: whose run, whether it holds the stop, whether a live writer holds it."""

    path: Path
    uid: str | None
    stopped: bool
    busy: bool
    files: tuple[tuple[Path, bool], ...]


def _held_by_a_writer(path: Path) -> bool:
    """A live process holds the file's lock (its run is still being written)."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        fcntl.flock(descriptor, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(descriptor)  # releases the shared lock taken just now
    return False


def _looks_like_spool_file(path: Path) -> bool:
    """A ``.jsonl`` file whose first line is ``["start", {"uid": ...}]``: a spooled run."""
    if path.suffix != ".jsonl":
        return False
    try:
        with path.open("rb") as file:
            first = json.loads(file.readline(1 << 20))
    except (OSError, ValueError):
        return False
    return (
        isinstance(first, list)
        and len(first) == 2
        and first[0] == "start"
        and isinstance(first[1], dict)
        and isinstance(first[1].get("uid"), str)
    )


def _read_spool(path: Path, root: Path) -> _SpoolFile:
    """What a spool file holds; an unreadable one is still a spool file (never an orphan)."""
    busy = _held_by_a_writer(path)
    try:
        documents = read_spool_file(path)
    except (OSError, ValueError):
        return _SpoolFile(path, None, False, busy, ())
    uid = None
    if documents and documents[0][0] == "start" and isinstance(documents[0][1], dict):
        uid = documents[0][1].get("uid")
    files: list[tuple[Path, bool]] = []
    for name, doc in documents:
        if (found := document_file(name, doc, root)) is not None:
            files.append((found, False))
    stopped = any(name == "stop" for name, _ in documents)
    return _SpoolFile(path, uid if isinstance(uid, str) else None, stopped, busy, tuple(files))


def _spool_directories(
    store: AnalysisStore,
) -> tuple[set[Path], list[tuple[Path, str]], list[Path]]:
    """``(directories, unreadable, recorded roots)``: every spool the store knows of (the
    default, the one it was opened with, the recorded ones), those recorded spools that
    cannot be read here (and why), and the roots recorded beside them."""
    root = store.root
    directories = {root / SPOOL_DIRECTORY}
    if store.spool is not None:
        directories.add(store.spool)
    unreadable: list[tuple[Path, str]] = []
    roots: list[Path] = []
    host = socket.gethostname()
    for entry in registered_spools(root):
        roots.append(entry.root)
        here = entry.seen_from(root)
        try:
            os.listdir(here)
        except FileNotFoundError:
            if entry.host != host:  # another machine's disk: what it holds is unknown here
                unreadable.append((here, f"recorded by host {entry.host}, not found here"))
            continue  # this host, and gone: nothing is spooled there
        except OSError as error:
            unreadable.append((here, f"{type(error).__name__}: {error.strerror or error}"))
            continue
        directories.add(here)
    return directories, unreadable, roots


# ------------------------------------------------------------------------------ the root


def _walk_root(root: Path, spools: set[Path]) -> Iterator[tuple[Path, bool, bool]]:
    """``(path, is_directory, is_empty)`` of every entry under ``root`` (not ``root`` itself,
    not the store's own files, not a spool directory), never following symlinks: a symlink is
    an entry of its own."""
    for directory, dirnames, filenames in os.walk(root, topdown=True, followlinks=False):
        here = Path(directory)
        if here == root:
            filenames[:] = [n for n in filenames if n not in _OWN_NAMES]
            dirnames[:] = [n for n in dirnames if n not in _OWN_NAMES]
        dirnames[:] = [n for n in dirnames if here / n not in spools]
        for name in sorted(filenames):
            yield here / name, False, False
        for name in sorted(dirnames):
            path = here / name
            if path.is_symlink():  # os.walk lists it but does not enter it
                yield path, False, False
        if here != root:
            yield here, True, not os.listdir(here)


@dataclass
class _Reference:
    kind: str  # complete / failure / unrecognized / in_progress / incomplete / spooled
    uid: str
    path: Path
    is_directory: bool


def _recorded_roots(references: Iterable[_Reference], root: Path) -> set[Path]:
    """The roots paths were recorded under, where not under ``root`` (see recorded_root)."""
    found = {
        recorded_root(reference.path, reference.uid)
        for reference in references
        if not reference.path.is_relative_to(root)
    }
    return {old for old in found if old is not None}


def check_store(store: AnalysisStore, *, grace: float = DEFAULT_GRACE) -> FsckReport:
    """Find incomplete runs, orphaned files and missing files of an analysis store.

    Read only: nothing is changed, nothing is created (it works with the read-only key of a
    served store). Pass the result to :func:`repair` to fix what it lists.

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
        raise AnalysisInputError(f"grace must be >= 0 seconds, got {grace}")
    now = time.time()
    root = store.root

    # the spools, and the entries of the root (spool files under it are found by content)
    spool_directories, unreadable_spools, registered_roots = _spool_directories(store)
    entries = list(_walk_root(root, spool_directories))
    paths = [p for directory in sorted(spool_directories) for p in spool_files(directory)]
    paths += [p for p, is_dir, _ in entries if not is_dir and _looks_like_spool_file(p)]
    spool_paths = set(paths)
    spooled = [_read_spool(path, root) for path in dict.fromkeys(paths)]
    waiting = {s.uid for s in spooled if s.uid and s.stopped and not s.busy}
    writing = {s.uid for s in spooled if s.uid and s.busy}

    # the runs, and the files each refers to (as recorded)
    found: dict[str, list[Any]] = {
        kind: [] for kind in ("complete", "failure", "incomplete", "in_progress", "awaiting")
    }
    found["unrecognized"] = []
    references: list[_Reference] = [
        _Reference("spooled", s.uid or "", path, is_directory)
        for s in spooled
        for path, is_directory in s.files
    ]
    issues: dict[str, tuple[str, str, float | None]] = {}
    for uid, run in store.runs.include_data_sources().items():
        kind, reason, started = _classify(run, now, grace)
        if kind in ("incomplete", "in_progress") and uid in writing:
            kind, reason = "in_progress", "its spool file is being written"
        elif kind in ("incomplete", "in_progress") and uid in waiting:
            kind = "awaiting"
        references += [_Reference(kind, uid, p, d) for p, d in asset_files(run)]
        issues[uid] = (kind, reason, started)
        if kind in ("complete", "failure", "unrecognized", "awaiting"):
            found[kind].append(uid)

    # identified relative to the store: recorded paths mapped onto the root now
    locator = Locator(root, _recorded_roots(references, root) | set(registered_roots))
    keep = _References()  # complete runs, failures, foreign nodes, spools: never removed
    shield = _References()  # in-progress runs: left alone for now
    missing: list[MissingFile] = []
    run_files: dict[str, list[Path]] = {}
    moved: dict[Path, tuple[set[Path], set[Path], set[str]]] = {}
    for reference in references:
        located: Located = locator.locate(reference.path)
        if located.recorded_under is not None and located.current is not None:
            files, reachable, uids = moved.setdefault(located.recorded_under, (set(), set(), set()))
            files.add(located.recorded)
            if located.reachable:
                reachable.add(located.recorded)
            uids.add(reference.uid)
        where = located.current if located.current is not None else located.recorded
        if reference.kind == "complete" and not os.path.lexists(where):
            recorded = located.recorded if located.recorded != where else None
            missing.append(MissingFile(reference.uid, where, recorded))
        if located.current is None:  # outside the store: never ours to touch
            continue
        if reference.kind in ("incomplete", "in_progress"):
            run_files.setdefault(reference.uid, []).append(located.current)
        target = shield if reference.kind == "in_progress" else keep
        if reference.kind != "incomplete":
            target.add(located.current, reference.is_directory)

    in_progress_dirs: list[Path] = []
    for uid, (kind, reason, started) in issues.items():
        if kind in ("incomplete", "in_progress"):
            of_run = tuple(dict.fromkeys(run_files.get(uid, [])))
            found[kind].append(RunIssue(uid, reason, started, of_run))
            if kind == "in_progress":
                in_progress_dirs.append(root / uid)

    orphaned: list[Path] = []
    empty: list[Path] = []
    recent: list[Path] = []
    for path, is_directory, is_empty in entries:
        if path in spool_paths:
            continue
        try:
            status = path.lstat()
        except FileNotFoundError:  # removed while we looked
            continue
        if keep.covers(path, status):
            continue
        young = now - _touched(status) < grace
        shielded = shield.covers(path, status) or any(
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
        embedded=getattr(store, "_embedded_directory", None) is not None,
        complete=tuple(found["complete"]),
        recorded_failures=tuple(found["failure"]),
        incomplete=tuple(found["incomplete"]),
        in_progress=tuple(found["in_progress"]),
        awaiting_replay=tuple(found["awaiting"]),
        unrecognized=tuple(found["unrecognized"]),
        orphaned_files=tuple(orphaned),
        empty_directories=tuple(empty),
        recent_files=tuple(recent),
        missing_files=tuple(missing),
        moved=tuple(
            MovedFiles(old, len(files), len(reachable), tuple(sorted(uids)))
            for old, (files, reachable, uids) in sorted(moved.items())
        ),
        spooled=tuple(s.path for s in spooled),
        unreadable_spools=tuple(unreadable_spools),
        quarantined=quarantine_contents(root).files,
        lineage_index=_lineage_index_problem(store),
        index_here=_catalog_uri(store) is not None,
    )


def _catalog_uri(store: AnalysisStore) -> str | None:
    """The catalog URI of a store whose catalog this process reads (embedded, or PostgreSQL
    reached directly), or None."""
    reader = getattr(store, "_lineage", None)
    catalog = getattr(reader, "catalog", None)
    if catalog is not None:
        return f"sqlite+aiosqlite:///{catalog}"
    return getattr(reader, "catalog_uri", None)


def _lineage_index_problem(store: AnalysisStore) -> str:
    """What :class:`FsckReport` says of the lineage index ("" when fine or not checkable):
    checked here when this process reads the catalog (embedded), else by the server through
    the store's route (a served store; "" if the server has no such route)."""
    from ._lineage_index import HEALTH, IndexState, check
    from ._lineage_reader import RouteReader

    catalog_uri = _catalog_uri(store)
    if catalog_uri is not None:
        state = check(catalog_uri)
    elif not isinstance(store._lineage, RouteReader):
        return ""
    else:
        answer = store._lineage.ask(HEALTH)
        if answer is None:
            return ""
        state = IndexState(**answer)
    if state.ok:
        return ""
    if not state.installed:
        return "not installed, or its triggers are missing (a tiled migration drops them)"
    problem = f"{state.missing} edge(s) missing, {state.stale} stale"
    if state.missing_hashes or state.stale_hashes:
        problem += f"; {state.missing_hashes} lineage hash(es) missing, {state.stale_hashes} stale"
    return problem


# ------------------------------------------------------------------------------ repair


def delete_run(run: Any) -> None:
    """Delete a run's node, its streams and their rows in tiled's own table storage (tiled
    never deletes external files: ours are quarantined as orphans, or reused by a replay)."""
    run.delete(recursive=True, external_only=False)


def _node_records(node: Any, path: tuple[str, ...]) -> Iterator[tuple[str, Any]]:
    """``("tiled_node", ...)`` records of ``node`` and the nodes below it: metadata, data
    sources and (tables) rows; what a run holds when its documents cannot be exported."""
    base = getattr(node, "base", node)
    item = base.include_data_sources().item
    attributes = item.get("attributes", {})
    record: dict[str, Any] = {
        "path": list(path),
        "structure_family": attributes.get("structure_family"),
        "specs": attributes.get("specs"),
        "metadata": dict(base.metadata),
        "data_sources": attributes.get("data_sources"),
    }
    family = str(attributes.get("structure_family", ""))
    if family == "table":
        with contextlib.suppress(Exception):  # tiled's own storage: kept if readable
            record["rows"] = base.read().to_dict(orient="list")
    yield "tiled_node", record
    if family in ("container", "composite"):
        for key, child in base.items():
            yield from _node_records(child, (*path, key))


def _run_documents(run: Any, uid: str) -> Iterator[tuple[str, Any]]:
    """The run's documents (bluesky-tiled-plugins' ``documents()``); when the server cannot
    export them, its start and stop documents and every node's metadata, data sources and
    table rows instead."""
    try:
        documents = list(run.documents())
    except Exception:  # e.g. a server without the application/json-seq exporter
        documents = []
    if documents and documents[0][0] == "start":
        yield from ((name, dict(doc)) for name, doc in documents)
        return
    metadata = run.metadata
    if metadata.get("start"):
        yield "start", dict(metadata["start"])
    yield from _node_records(run, (uid,))
    if metadata.get("stop"):
        yield "stop", dict(metadata["stop"])


def repair(store: AnalysisStore, report: FsckReport) -> RepairResult:
    """Fix what ``report`` lists, destroying nothing: incomplete runs are deleted from the
    catalog after their documents are kept in the quarantine; orphaned files are moved into
    the quarantine (``ROOT/.bas-quarantine/<time>/files/<path>``); empty directories are
    removed. Returns what was done. ``bas fsck --purge`` empties the quarantine.

    Conservative: in-progress runs and recent files are never touched; each incomplete run is
    re-read first and left alone if it has completed since the check; a file is left alone if
    it was touched within ``report.grace`` since, if it belongs to a run that could not be
    deleted, or if reaching it would follow a symlink out of the root. Only entries under
    ``store.root`` are moved; a symlink is moved itself, never what it points to. Files
    outside the root and missing files are reported, never touched. Nothing at all is done
    while the store looks moved (``report.moved_away``), and no file is moved while a spool
    the store recorded cannot be read here (``report.unreadable_spools``).

    Raises
    ------
    AnalysisStoreError
        If the store was opened read-only, or its quarantine is a symlink or not a directory.
    ValueError
        If ``report`` is about another root.
    """
    root = store.root
    if getattr(store, "read_only", False):
        raise AnalysisStoreError(
            "repair needs a store opened for writing; this one was opened read-only "
            "(nothing was changed)"
        )
    if report.root != root:
        raise AnalysisInputError(f"the report is about {report.root}, not this store's root {root}")
    if report.moved_away:
        roots = ", ".join(str(m.recorded_root) for m in report.moved_away)
        return RepairResult(
            skipped=(
                (
                    "everything",
                    f"the store's files are recorded under {roots}, which no longer leads "
                    "to them (the store was moved): nothing is changed until it is back",
                ),
            )
        )
    rebuilt = False
    if report.lineage_index and (catalog_uri := _catalog_uri(store)) is not None:
        from ._lineage_index import rebuild

        rebuild(catalog_uri)
        rebuilt = True
    check_quarantine(root)  # before anything is done
    quarantine = Quarantine(root, f"bas fsck --repair (grace {report.grace:g} s)")
    deleted: list[str] = []
    skipped: list[tuple[str, str]] = []
    kept_files: set[Path] = set()
    removed: list[Path] = []
    directories: list[Path] = []
    try:
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
                quarantine.keep_run(issue.uid, issue.reason, _run_documents(run, issue.uid))
            except Exception as error:
                skipped.append((f"run {issue.uid}", f"its documents could not be kept: {error}"))
                kept_files.update(issue.files)
                continue
            try:
                delete_run(run)
            except Exception as error:  # e.g. an API key without the delete:node scope
                skipped.append((f"run {issue.uid}", f"could not be deleted: {error}"))
                quarantine.forget_run(issue.uid)
                kept_files.update(issue.files)
                continue
            deleted.append(issue.uid)

        parents: set[Path] = set()
        now = time.time()
        for path in report.orphaned_files:
            if report.unreadable_spools:
                spools = ", ".join(str(p) for p, _ in report.unreadable_spools)
                skipped.append((f"file {path}", f"the spool {spools} cannot be read here"))
                continue
            if path in kept_files:
                skipped.append((f"file {path}", "its run was not deleted"))
                continue
            if not inside_root(path, root):
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
            try:
                quarantine.take(path)  # a symlink: the link itself
            except OSError as error:
                skipped.append((f"file {path}", f"could not be moved to the quarantine: {error}"))
                continue
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
        directories.extend(remove_empty_directories(parents, root))
        for directory in directories:
            quarantine.removed_directory(directory)
    finally:
        quarantine.close()
    return RepairResult(
        deleted_runs=tuple(deleted),
        removed_files=tuple(removed),
        removed_directories=tuple(directories),
        skipped=tuple(skipped),
        quarantine=quarantine.batch,
        rebuilt_lineage_index=rebuilt,
    )
