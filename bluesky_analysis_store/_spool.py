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
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._files import fsync_path

logger = logging.getLogger("bluesky_analysis_store.spool")

#: The spool's directory under a served store's root (fsck and replay know it).
SPOOL_DIRECTORY = ".bas-spool"
#: Seconds after an unreachable store during which new runs go straight to the spool.
DEFAULT_RETRY_AFTER = 30.0

Subscriber = Callable[[str, dict[str, Any]], Any]


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


class _SpooledRun:
    """One run's spool file, open and locked (suitcase-jsonl's ``Serializer`` writes it)."""

    def __init__(self, directory: Path, start: Mapping[str, Any]) -> None:
        import event_model
        from suitcase.jsonl import Serializer

        self.uid = str(start["uid"])
        self._manager = _spool_manager(directory)
        prefix = f"{self.uid}-{secrets.token_hex(4)}"  # a run sent twice gets two files
        self._serializer = Serializer(
            self._manager, file_prefix=prefix, cls=event_model.NumpyEncoder, flush=True
        )
        self.online = True  # every document so far is in the store too
        self.documents = 0
        self.append("start", start, sync=False)
        self.path = Path(self._manager.handle.name)
        fsync_path(directory)  # the file's name survives a crash

    def append(self, name: str, doc: Mapping[str, Any], *, sync: bool) -> None:
        """Write one document (flushed; ``sync``: on disk before this returns)."""
        self._serializer(name, doc)  # after a stop, suitcase-jsonl closes (and unlocks) it
        self.documents += 1
        if sync:
            self.sync()

    def sync(self) -> None:
        fsync_path(self.path)  # through a descriptor of its own: the file may be closed

    def close(self, *, keep: bool) -> None:
        """Delete the file (the run is in the store whole) or keep it for replay; unlock."""
        if keep:
            self.sync()
        else:
            self.path.unlink(missing_ok=True)  # while still locked: no replay can start on it
        self._serializer.close()


class SpoolingInserter:
    """A subscriber ``(name, doc)`` that spools every document, then inserts it; when the store
    is unreachable it keeps spooling, and never raises for that.

    Parameters
    ----------
    insert : callable
        Inserts one document into the store (``AnalysisStore``'s own insert).
    directory : Path
        The spool directory (created if missing).
    retry_after : float
        Seconds after the store was found unreachable during which new runs go straight to the
        spool without trying the store (each try can wait for tiled's client retries).
    on_offline : callable, optional
        Called with a run's uid when that run goes to the spool only (the store uses it to
        forget the run's half-inserted state).
    """

    def __init__(
        self,
        insert: Subscriber,
        directory: Path,
        *,
        retry_after: float = DEFAULT_RETRY_AFTER,
        on_offline: Callable[[str], Any] | None = None,
    ) -> None:
        self.insert = insert
        self.directory = Path(directory)
        with contextlib.suppress(OSError):  # now, not in the middle of a run (or a refusal)
            self.directory.mkdir(parents=True, exist_ok=True)
        self.retry_after = retry_after
        self.on_offline = on_offline
        self._runs: dict[str, _SpooledRun] = {}
        self._owner: dict[str, str] = {}  # descriptor / resource uid -> start uid
        self._offline_until = 0.0

    @property
    def offline(self) -> bool:
        """The store was found unreachable less than ``retry_after`` seconds ago."""
        return time.monotonic() < self._offline_until

    def mark_unreachable(self) -> None:
        """The store could not be reached (found by someone else): spool without trying."""
        self._offline_until = time.monotonic() + self.retry_after

    def _run_of(self, name: str, doc: Mapping[str, Any]) -> _SpooledRun | None:
        uid: Any = doc.get("run_start") if name != "datum" else None
        if uid is None:
            for link in ("descriptor", "resource", "stream_resource"):
                if isinstance(doc.get(link), str) and doc[link] in self._owner:
                    uid = self._owner[doc[link]]
                    break
        return self._runs.get(uid) if isinstance(uid, str) else None

    def __call__(self, name: str, doc: dict[str, Any]) -> None:
        run = None
        if isinstance(doc, Mapping):
            if name == "start" and isinstance(doc.get("uid"), str) and doc["uid"] not in self._runs:
                self.directory.mkdir(parents=True, exist_ok=True)
                run = self._runs[doc["uid"]] = _SpooledRun(self.directory, doc)
                if self.offline:
                    self._go_offline(run, "it was unreachable moments ago")
                    return
            elif name != "start":
                run = self._run_of(name, doc)
        if run is None:  # not a run this spool follows (or malformed): the store decides
            self.insert(name, doc)
            return
        linked = name in ("descriptor", "resource", "stream_resource")
        if linked and isinstance(doc.get("uid"), str):
            self._owner[doc["uid"]] = run.uid
        if name != "start" and name != "stop":
            run.append(name, doc, sync=not run.online)
        if run.online:
            try:
                self.insert(name, doc)
            except Exception as error:
                if not is_unreachable(error):
                    if name == "start":  # refused outright (a read-only key, no provenance)
                        self._discard(run)
                    elif name == "stop":
                        self._end(run, doc, inserted=False)
                    raise
                self.mark_unreachable()
                self._go_offline(run, f"{type(error).__name__}: {error!s:.200}")
        if name == "stop":
            self._end(run, doc, inserted=run.online)

    def _go_offline(self, run: _SpooledRun, why: str) -> None:
        run.online = False
        run.sync()  # from now on the spool holds the only copy
        logger.warning(
            "the analysis store cannot be reached (%s): run %s goes to the spool %s; "
            "`bas replay` inserts it once the store is back",
            why,
            run.uid,
            run.path,
        )
        if self.on_offline is not None:
            self.on_offline(run.uid)

    def _discard(self, run: _SpooledRun) -> None:
        """Nothing of the run is (or will be) in the store: nothing is to replay."""
        self._forget(run, keep=False)

    def _forget(self, run: _SpooledRun, *, keep: bool) -> None:
        run.close(keep=keep)
        del self._runs[run.uid]
        for key in [k for k, v in self._owner.items() if v == run.uid]:
            del self._owner[key]

    def discard_run(self, uid: str) -> None:
        """Forget run ``uid`` and delete its spool file (its save was taken back whole)."""
        if uid in self._runs:
            self._discard(self._runs[uid])

    def _end(self, run: _SpooledRun, stop: Mapping[str, Any], *, inserted: bool) -> None:
        if inserted:
            self._discard(run)
            return
        run.append("stop", stop, sync=True)
        self._forget(run, keep=True)
        logger.warning(
            "run %s is in the spool (%d documents): %s", run.uid, run.documents, run.path
        )

    def close(self) -> None:
        """Close the files of runs still open (kept for replay, not deleted)."""
        for run in list(self._runs.values()):
            run.close(keep=True)
        self._runs.clear()


# --------------------------------------------------------------------------------- replay


def read_spool_file(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """The ``(name, doc)`` pairs of one spool file, in order. A last line cut off by a crash
    (no newline) is dropped; any other unreadable line raises ``ValueError`` naming it."""
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
            raise ValueError(
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
    return runs[uid].metadata if uid in runs else None


def replay_file(
    path: Path, runs: Any, insert: Subscriber, delete_run: Callable[[str], Any]
) -> tuple[str, str, str | int]:
    """Replay one spool file (held locked by the caller). Returns ``(outcome, uid, detail)``
    with outcome one of ``inserted`` (detail: how many documents), ``already_stored``,
    ``incomplete`` or ``failed`` (detail: why)."""
    from ._idempotent import comparable

    documents = read_spool_file(path)
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


def spooled_documents(directory: Path) -> Iterator[tuple[Path, list[tuple[str, dict[str, Any]]]]]:
    """Every readable spool file with its documents (for fsck: their files are not orphans)."""
    for path in spool_files(directory):
        with contextlib.suppress(OSError, ValueError):
            yield path, read_spool_file(path)
