"""A durable local spool for documents on their way into an analysis store, and its replay.

AFL's fallback files were never replayed, and TiledWriter's own backup keeps a run in memory
until something fails. Here every document of a run is written to the spool *before* it is
inserted (write-ahead), one JSON-lines file per run in suitcase-jsonl's format (``[name, doc]``
per line; it keeps every document type, stream_resource and stream_datum included). When the
run has been inserted whole, its file is deleted. When the store cannot be reached, the rest of
the run goes to the spool only (each document synced to disk), the caller (a RunEngine) is not
interrupted, and :func:`replay_spool` (``bas replay``) inserts the run later.

A spool file is locked (``flock``) by the process writing it for as long as its run is open, so
a replay never touches a run that is still being written. A file holds a stop document only
when its run could not be inserted whole: the stop is inserted first and spooled only if that
fails, so a replay never races the writer of a run.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import secrets
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core._errors import UnreadableFileError
from ..core._files import fsync_path

if TYPE_CHECKING:
    from ..core._documents import Document, RunStart, Subscriber

logger = logging.getLogger("bluesky_analysis_store.spool")

#: The spool's directory under a served store's root (fsck and replay know it).
SPOOL_DIRECTORY = ".bas-spool"


def is_unreachable(error: BaseException) -> bool:
    """Whether ``error`` (or what caused it) says the store could not be reached: a transport
    error (refused, reset, timed out) or an HTTP 5xx answer. Anything else is the document's
    own fault and is raised as usual."""
    import httpx

    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, httpx.TransportError):
            return True
        status = getattr(getattr(current, "response", None), "status_code", None)
        if isinstance(status, int) and status >= 500:
            return True
        current = current.__cause__ or current.__context__
    return False


def _spool_manager(directory: Path) -> Any:
    """suitcase's MultiFileManager (exclusive create), locking each file it opens."""
    from suitcase.utils import MultiFileManager

    class LockingFileManager(MultiFileManager):
        def open(self, label: str, postfix: str, mode: str, **kwargs: Any) -> Any:
            handle = super().open(label, postfix, mode, **kwargs)
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)  # ours until the run is closed
            self.handle = handle
            return handle

    return LockingFileManager(directory)


class SpooledRun:
    """One run's spool file, open and locked (suitcase-jsonl's ``Serializer`` writes it)."""

    def __init__(self, directory: Path, start: RunStart) -> None:
        import event_model
        from suitcase.jsonl import Serializer

        self.uid = str(start["uid"])
        directory.mkdir(parents=True, exist_ok=True)
        self._manager = _spool_manager(directory)
        prefix = f"{self.uid}-{secrets.token_hex(4)}"  # a run sent twice gets two files
        self._serializer = Serializer(
            self._manager, file_prefix=prefix, cls=event_model.NumpyEncoder, flush=True
        )
        self.documents = 0
        self.path = directory / f"{prefix}.jsonl"  # suitcase-jsonl's name for it
        try:
            self.append("start", start, sync=False)
            self.path = Path(self._manager.handle.name)
            fsync_path(directory)  # the file's name survives a crash
        except OSError:
            self.abandon()  # a full disk or no permission: no half-written file stays
            raise

    def append(self, name: str, doc: Document, *, sync: bool) -> None:
        """Write one document (flushed; ``sync``: on disk before this returns)."""
        self._serializer(name, doc)  # after a stop, suitcase-jsonl closes (and unlocks) it
        self.documents += 1
        if sync:
            self.sync()

    def sync(self) -> None:
        fsync_path(self.path)  # through a descriptor of its own: the file may be closed

    def abandon(self) -> None:
        """The file could not be written whole: remove it (best effort) and unlock."""
        with contextlib.suppress(OSError):
            self.path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            self._serializer.close()

    def close(self, *, keep: bool) -> None:
        """Delete the file (the run is in the store whole) or keep it for replay; unlock."""
        if keep:
            self.sync()
        else:
            self.path.unlink(missing_ok=True)  # while still locked: no replay can start on it
        self._serializer.close()


# --------------------------------------------------------------------------------- replay


def read_spool_file(path: Path) -> list[tuple[str, Any]]:
    """The ``(name, doc)`` pairs of one spool file, in order. A last line cut off by a crash
    (no newline) is dropped; any other unreadable line raises ``ValueError`` naming it.

    Untyped on purpose: the documents were checked before they were spooled, but what is read
    back from disk is only JSON; a replay sends it through the gate again, fsck reads it
    defensively.
    """
    documents = []
    text = path.read_text()
    lines = text.split("\n")
    complete = lines[:-1] if not text.endswith("\n") else lines
    for number, line in enumerate(complete, start=1):
        if not line:
            continue
        try:
            name, doc = json.loads(line)
        except (ValueError, TypeError) as error:
            raise UnreadableFileError(
                f"{path}:{number} is not a [name, document] JSON line: {error}"
            ) from None
        documents.append((str(name), doc))
    return documents


def spool_files(directory: Path) -> list[Path]:
    """The spool's run files, oldest first."""
    if not directory.is_dir():
        return []
    return sorted(directory.glob("*.jsonl"), key=lambda p: (p.stat().st_mtime, p.name))


@contextlib.contextmanager
def _unless_locked(path: Path) -> Iterator[bool]:
    """Yield True holding ``path``'s lock, or False if a live writer holds it."""
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        yield False
        return
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(descriptor)


@dataclass
class ReplayReport:
    """What :func:`replay_spool` did, one entry per spool file.

    Attributes
    ----------
    inserted : list of (uid, documents)
        Runs inserted whole; their spool files were deleted.
    already_stored : list of str
        Runs already in the store whole (their files were stale); deleted.
    busy : list of Path
        Files of runs still being written (locked by a live process); left alone.
    incomplete : list of (Path, reason)
        Files without a stop document whose writer is gone; left for a person to decide.
    failed : list of (Path, reason)
        Files whose run could not be inserted (store unreachable, conflict, refused);
        left in the spool.
    """

    inserted: list[tuple[str, int]] = field(default_factory=list)
    already_stored: list[str] = field(default_factory=list)
    busy: list[Path] = field(default_factory=list)
    incomplete: list[tuple[Path, str]] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def pending(self) -> int:
        """Spool files left that need attention (busy files are not counted)."""
        return len(self.incomplete) + len(self.failed)

    def as_text(self) -> str:
        """One line per file, then a summary."""
        lines = [f"inserted run {uid} ({n} documents)" for uid, n in self.inserted]
        lines += [f"already in the store: run {uid}" for uid in self.already_stored]
        lines += [f"being written (left alone): {path}" for path in self.busy]
        lines += [f"incomplete (left alone): {path}: {why}" for path, why in self.incomplete]
        lines += [f"failed: {path}: {why}" for path, why in self.failed]
        documents = sum(n for _, n in self.inserted)
        lines.append(
            f"replayed {len(self.inserted)} run(s), {documents} document(s); "
            f"{len(self.already_stored)} already stored; {len(self.busy)} busy, "
            f"{len(self.incomplete)} incomplete, {len(self.failed)} failed"
        )
        return "\n".join(lines)


def _stored(runs: Any, uid: str) -> Mapping[str, Any] | None:
    from ._runs import stored_run

    run = stored_run(runs, uid)
    return None if run is None else run.metadata


def replay_file(
    path: Path, runs: Any, insert: Subscriber, delete_run: Callable[[str], Any]
) -> tuple[str, str, str | int]:
    """Replay one spool file (held locked by the caller). Returns ``(outcome, uid, detail)``
    with outcome one of ``inserted`` (detail: how many documents), ``already_stored``,
    ``incomplete`` or ``failed`` (detail: why)."""
    return replay_documents(read_spool_file(path), runs, insert, delete_run)


def replay_documents(
    documents: list[tuple[str, Any]],
    runs: Any,
    insert: Subscriber,
    delete_run: Callable[[str], Any],
) -> tuple[str, str, str | int]:
    """Insert one run's ``documents`` into ``runs`` unless it is there whole already (see
    :func:`replay_file`, which reads them from a spool file; ``bas replay DIR --into`` gives
    those of a JSONL store)."""
    from ._insert import comparable

    if not documents or documents[0][0] != "start" or "uid" not in documents[0][1]:
        return "failed", "", "the file does not begin with a start document"
    start = documents[0][1]
    uid = str(start["uid"])
    stop = next((doc for name, doc in documents if name == "stop"), None)
    stored = _stored(runs, uid)
    if stored is not None and comparable(stored.get("start") or {}) != comparable(start):
        return "failed", uid, f"run {uid} is in the store with a different start document"
    stored_stop = (stored or {}).get("stop")
    if stop is None:
        if stored_stop and stored_stop.get("exit_status") == "success":
            return "already_stored", uid, ""  # inserted whole; its writer died before cleanup
        return (
            "incomplete",
            uid,
            (
                f"no stop document: its writer ended before the run did ({len(documents)} "
                "documents kept); insert them by hand or delete the file"
            ),
        )
    if stored_stop is not None:
        if comparable(stored_stop) == comparable(stop):
            return "already_stored", uid, ""
        return "failed", uid, f"run {uid} is in the store with a different stop document"
    if stored is not None:  # half inserted before the store went away: insert it again whole
        delete_run(uid)
    for name, doc in documents:
        insert(name, doc)
    return "inserted", uid, len(documents)


def replay_spool(
    directory: Path, runs: Any, make_insert: Callable[[], Subscriber], delete_run: Any
) -> ReplayReport:
    """Insert every spooled run that is complete and not being written, then delete its file.

    Parameters
    ----------
    directory : Path
        The spool directory.
    runs : CatalogOfBlueskyRuns client
        Where the runs go.
    make_insert : callable
        Returns a fresh document subscriber into ``runs`` (one per file).
    delete_run : callable
        ``delete_run(uid)`` removes a half-inserted run before it is inserted again.
    """
    report = ReplayReport()
    for path in spool_files(directory):
        with _unless_locked(path) as ours:
            if not ours:
                if path.exists():
                    report.busy.append(path)
                continue
            try:
                outcome, uid, detail = replay_file(path, runs, make_insert(), delete_run)
            except Exception as error:
                report.failed.append((path, f"{type(error).__name__}: {error!s:.300}"))
                continue
            if outcome == "inserted":
                report.inserted.append((uid, int(detail)))
            elif outcome == "already_stored":
                report.already_stored.append(uid)
            elif outcome == "incomplete":
                report.incomplete.append((path, str(detail)))
                continue
            else:
                report.failed.append((path, str(detail)))
                continue
            path.unlink()
    if report.inserted or report.already_stored:
        fsync_path(directory)
    return report


def spooled_documents(directory: Path) -> Iterator[tuple[Path, list[tuple[str, Any]]]]:
    """Every readable spool file with its documents (for fsck: their files are not orphans)."""
    for path in spool_files(directory):
        with contextlib.suppress(OSError, ValueError):
            yield path, read_spool_file(path)


# ----------------------------------------------------------------- the registry of spools

#: Under a store's root: the spool directories the store was opened with (``bas fsck`` reads
#: it, so that a repair run without ``--spool`` still knows every spool).
SPOOL_REGISTRY = ".bas-spools.jsonl"


@dataclass(frozen=True)
class RegisteredSpool:
    """A spool directory recorded in a store's :data:`SPOOL_REGISTRY`.

    Attributes
    ----------
    spool : Path
        The spool directory, as the process that used it saw it.
    root : Path
        The store's root, as that process saw it.
    host : str
        The host that process ran on.
    """

    spool: Path
    root: Path
    host: str

    def seen_from(self, root: Path) -> Path:
        """The spool as seen through ``root``: a spool inside the recorded root lies at the
        same place inside ``root`` (the store moved, or is mounted elsewhere here)."""
        if self.spool.is_relative_to(self.root):
            return root / self.spool.relative_to(self.root)
        return self.spool


def registered_spools(root: Path) -> list[RegisteredSpool]:
    """The spools recorded under ``root`` (each once; unreadable lines are skipped)."""
    try:
        text = (root / SPOOL_REGISTRY).read_text()
    except (FileNotFoundError, NotADirectoryError):
        return []
    found: dict[RegisteredSpool, None] = {}
    for line in text.splitlines():
        try:
            entry = json.loads(line)
            spool = RegisteredSpool(Path(entry["spool"]), Path(entry["root"]), str(entry["host"]))
        except (ValueError, TypeError, KeyError):
            continue
        if spool.spool.is_absolute() and spool.root.is_absolute():
            found[spool] = None
    return list(found)


def register_spool(root: Path, spool: Path) -> None:
    """Record ``spool`` in ``ROOT/.bas-spools.jsonl`` (once per spool, root and host).

    The default spool (``ROOT/.bas-spool``) is not recorded: fsck always looks there. Best
    effort: a root this process cannot write (a served store's root seen read-only) only logs
    a warning, since saving would fail there anyway.
    """
    import socket

    if spool == root / SPOOL_DIRECTORY:
        return
    entry = RegisteredSpool(spool, root, socket.gethostname())
    try:
        if entry in registered_spools(root):
            return
        line = json.dumps({"spool": str(spool), "root": str(root), "host": entry.host}) + "\n"
        # O_NOFOLLOW: a symlink planted in its place is not written through
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW
        descriptor = os.open(root / SPOOL_REGISTRY, flags, 0o644)
        try:
            os.write(descriptor, line.encode())  # one short O_APPEND write: never interleaved
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
    except OSError as error:
        logger.warning(
            "could not record the spool %s in %s (%s): `bas fsck` run without --spool will "
            "not know it",
            spool,
            root / SPOOL_REGISTRY,
            error,
        )
