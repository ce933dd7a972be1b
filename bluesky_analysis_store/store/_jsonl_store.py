"""The JSONL directory store (``AnalysisStore.open("jsonl:DIR")``): analysis runs as
suitcase-jsonl files, with no tiled at all (a laptop, a beamtime without the network).

A directory holds::

    DIR/bas-jsonl-store.json   what it is (a directory holding it opens as a JSONL store)
    DIR/runs/UID-XXXX.jsonl    one run per file, in the spool's format (``[name, doc]`` lines,
                               written by the spool's own :class:`~..insert._spool.SpooledRun`)
    DIR/index.jsonl            one line per complete run: its file, start and stop documents
    DIR/files/                 the store's root: derived files, ``files/RUN_UID/STREAM/...``

A save runs the same code as a tiled store's (:class:`~._saving.SavingStore`) and its
documents go through the same checks and document gate
(:class:`~..insert._local.LocalPipeline`); a run's line goes into the index once its stop is
written, so lookups (:meth:`JsonlStore.with_lineage`, ``derived_from``, ``of_sample``,
``start_document``, ``in``, ``len``, iteration) see complete runs only. ``bas replay DIR
--into TARGET`` (:func:`~._jsonl_replay.replay_into`) inserts the runs into a tiled store
later, with every guarantee of a direct save.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from ..core._errors import (
    NotFoundError,
    RunNotReadableError,
    UnreadableFileError,
    UnsafePathError,
)
from ..core._files import ClosingContext, fsync_path
from ..core._paths import JSONL_PREFIX
from ._locations import document_file
from ._locks import create_lock_file
from ._queries import breadth_first
from ._saving import SavingStore, remove_files

if TYPE_CHECKING:
    from ..compose._compose import ComposedRun
    from ..core._documents import Document, RunStart
    from ..insert._local import LocalPipeline
    from ..insert._spool import SpooledRun
    from ..pairs._pairs import PairRegistry

#: The file that makes a directory a JSONL store.
MARKER = "bas-jsonl-store.json"
INDEX = "index.jsonl"
RUNS = "runs"
FILES = "files"


def is_jsonl_store(directory: str | Path) -> bool:
    """Whether ``directory`` holds a JSONL store (its marker file)."""
    return (Path(directory) / MARKER).is_file()


def _inside(directory: Path, name: str) -> Path:
    """``directory/name`` resolved (symlinks followed), which must stay inside ``directory``."""
    path = (directory / name).resolve()
    if not path.is_relative_to(directory):
        raise UnsafePathError(
            f"{directory / name} leads outside the JSONL store {directory} (to {path}); a "
            "JSONL store keeps its runs and files inside its directory"
        )
    return path


class _Index:
    """``DIR/index.jsonl`` read as it grows (several processes may append to it)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.entries: dict[str, dict[str, Any]] = {}
        self._offset = 0
        self._lock = threading.Lock()

    def refresh(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            try:
                with self.path.open("rb") as handle:
                    handle.seek(self._offset)
                    data = handle.read()
            except FileNotFoundError:
                return self.entries
            end = data.rfind(b"\n") + 1  # a line being written is read next time
            for line in data[:end].splitlines():
                if not line.strip():
                    continue
                try:
                    entry = json.loads(line)
                    self.entries[str(entry["start"]["uid"])] = entry
                except (ValueError, TypeError, KeyError) as error:
                    raise UnreadableFileError(
                        f"{self.path}: a line is not a run's index entry: {error}"
                    ) from None
            self._offset += end
            return self.entries

    def append(self, entry: Mapping[str, Any]) -> None:
        line = (json.dumps(entry, sort_keys=True, default=str) + "\n").encode()
        # one O_APPEND write: lines of several processes never interleave
        descriptor = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW)
        try:
            os.write(descriptor, line)
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


class _JsonlSink:
    """One run's file, written by the spool's :class:`SpooledRun`; indexed at its stop."""

    def __init__(self, store: JsonlStore) -> None:
        self.store = store
        self.spooled: SpooledRun | None = None
        self.start: Mapping[str, Any] | None = None

    def __call__(self, name: str, doc: Document) -> None:
        if name == "start":
            from ..insert._spool import SpooledRun

            self.start = doc
            self.spooled = SpooledRun(self.store.runs_directory, cast("RunStart", doc))
            return
        assert self.spooled is not None
        assert self.start is not None
        self.spooled.append(name, doc, sync=False)
        if name == "stop":
            self.spooled.close(keep=True)  # on disk before it is indexed
            entry = {"file": self.spooled.path.name, "start": self.start, "stop": doc}
            self.store._index.append(json.loads(json.dumps(entry, default=_plain)))

    def discard(self) -> None:
        if self.spooled is not None:
            self.spooled.abandon()


def _plain(value: Any) -> Any:
    import event_model

    return event_model.NumpyEncoder().default(value)


class JsonlStore(SavingStore, ClosingContext):
    """Analysis runs as JSONL files in a directory, without tiled (build it with
    ``AnalysisStore.open("jsonl:DIR")``; see the module's docstring).

    Parameters
    ----------
    directory : Path
        The store's directory (created with its marker if missing).
    registry : PairRegistry, optional
        Writer/handler pairs (default: every installed pair).
    raw : catalog, optional
        The raw runs analyses read (a tiled container), if any.
    read_only : bool
        Create nothing; ``save`` and ``insert`` raise.
    """

    def __init__(
        self,
        directory: str | Path,
        *,
        registry: PairRegistry | None = None,
        raw: Any = None,
        read_only: bool = False,
    ) -> None:
        self.directory = Path(directory).resolve()
        self.read_only = read_only
        if not is_jsonl_store(self.directory):
            if read_only:
                raise NotFoundError(
                    f"no JSONL store in {self.directory} (no {MARKER}); nothing was created "
                    "(the store was opened read-only)"
                )
            self._create()
        self.root = _inside(self.directory, FILES)
        self.runs_directory = _inside(self.directory, RUNS)
        self._index = _Index(_inside(self.directory, INDEX))
        self.raw = raw
        self.spool = None
        self._registry = registry
        self._lock = threading.Lock()
        self._pipeline: LocalPipeline | None = None
        if not read_only:
            create_lock_file(self.root)

    def _create(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        for name in (FILES, RUNS):
            (self.directory / name).mkdir(exist_ok=True)
        marker = {"format": "bluesky-analysis-store JSONL store", "version": 1}
        try:
            with (self.directory / MARKER).open("x") as handle:
                json.dump(marker, handle)
        except FileExistsError:  # another process made it a moment ago
            return
        fsync_path(self.directory)

    def __repr__(self) -> str:
        return f"JsonlStore({str(self.directory)!r})"

    @property
    def target(self) -> str:
        return f"{JSONL_PREFIX}{self.directory}"

    @property
    def _inserter(self) -> LocalPipeline:
        if self._pipeline is None:
            from ..insert._local import LocalPipeline

            self._pipeline = LocalPipeline(
                self.root,
                self.registry.spec_to_mimetype(),
                lambda start: _JsonlSink(self),
                self._kept,
                document_file,
            )
        return self._pipeline

    def _kept(self, uid: str) -> Mapping[str, Any] | None:
        return self._index.refresh().get(uid)

    # --- saving ----------------------------------------------------------------------------

    def insert(self, name: str, doc: Document) -> None:
        """Insert one document (``RE.subscribe(store.insert)``): the checks of a tiled store's
        insert, then the run's file; a run already kept, sent again unchanged, is skipped."""
        self._check_writable("insert")
        with self._lock:
            self._inserter(name, doc)

    def _lineage_contents(self, lineage_hash: str) -> dict[str, str | None]:
        return {
            uid: entry["start"].get("content_hash")
            for uid, entry in self._complete(lineage_hash=lineage_hash)
        }

    def _take_back(self, run: ComposedRun) -> None:
        self._inserter.discard(run.uid)
        if run.uid not in self._index.refresh():
            remove_files(run.files, self.root)

    # --- lookups, from the index -----------------------------------------------------------

    def _complete(
        self, *, include_incomplete: bool = False, **start_keys: Any
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        for uid, entry in self._index.refresh().items():
            success = (entry.get("stop") or {}).get("exit_status") == "success"
            start = entry["start"]
            if (include_incomplete or success) and all(
                start.get(key) == value for key, value in start_keys.items()
            ):
                yield uid, entry

    def with_lineage(self, lineage_hash: str, *, include_incomplete: bool = False) -> list[str]:
        """Uids of the (complete) runs with this lineage hash, in insertion order."""
        return [
            uid
            for uid, _ in self._complete(
                include_incomplete=include_incomplete, lineage_hash=lineage_hash
            )
        ]

    def derived_from(
        self, uid: str, *, recursive: bool = False, include_incomplete: bool = False
    ) -> list[str]:
        """Uids of the (complete) runs whose parents include ``uid`` (its subtree if
        ``recursive``), breadth first."""
        edges = [
            (parent, child)
            for child, entry in self._complete(include_incomplete=include_incomplete)
            for parent in entry["start"].get("parent_uids") or ()
        ]
        found = breadth_first(uid, edges)
        if recursive:
            return found
        direct = {child for parent, child in edges if parent == uid}
        return [child for child in found if child in direct]

    def of_sample(self, sample_uuid: str, *, include_incomplete: bool = False) -> list[str]:
        """Uids of the (complete) runs about one sample."""
        return [
            uid
            for uid, _ in self._complete(
                include_incomplete=include_incomplete, sample_uuid=sample_uuid
            )
        ]

    def failed_analyses(self, name: str | None = None) -> list[dict[str, Any]]:
        """The recorded analysis failures (as :meth:`AnalysisStore.failed_analyses`)."""
        failures = []
        for uid, entry in self._index.refresh().items():
            start, stop = entry["start"], entry.get("stop") or {}
            if stop.get("exit_status") != "fail" or (name and start.get("analysis_name") != name):
                continue
            failures.append(
                {
                    "uid": uid,
                    "analysis_name": start.get("analysis_name"),
                    "analysis_version": start.get("analysis_version"),
                    "parent_uids": list(start.get("parent_uids", [])),
                    "reason": stop.get("reason", ""),
                }
            )
        return failures

    def analysis_starts(self, names: Iterable[str], exit_status: str) -> dict[str, RunStart]:
        wanted = set(names)
        return {
            uid: cast("RunStart", dict(entry["start"]))
            for uid, entry in self._index.refresh().items()
            if entry["start"].get("analysis_name") in wanted
            and (entry.get("stop") or {}).get("exit_status") == exit_status
        }

    def _full_uid(self, uid: str) -> str | None:
        entries = self._index.refresh()
        if uid in entries:
            return uid
        matches = [key for key in entries if key.startswith(uid)] if len(uid) >= 5 else []
        return matches[0] if len(matches) == 1 else None

    def start_document(self, uid: str) -> RunStart | None:
        """The start document of ``uid`` (full or partial) from the index, else from the raw
        catalog, or None."""
        full = self._full_uid(uid)
        if full is not None:
            return cast("RunStart", dict(self._index.entries[full]["start"]))
        from ._store import _start_in

        return _start_in(self.raw, uid)

    def run_file(self, uid: str) -> Path:
        """The JSONL file of run ``uid`` (:class:`NotFoundError` if the store has no such
        run)."""
        full = self._full_uid(uid)
        if full is None:
            raise NotFoundError(f"no run {uid!r} in the JSONL store {self.directory}")
        return _inside(self.runs_directory, self._index.entries[full]["file"])

    def documents(self, uid: str) -> list[tuple[str, Any]]:
        """The documents of run ``uid``, in order, as written."""
        from ..insert._spool import read_spool_file

        return read_spool_file(self.run_file(uid))

    def find_run(self, uid: str) -> Any | None:
        """None if the store has no run ``uid``; else :class:`RunNotReadableError`: a JSONL
        store keeps documents, not a run to read data from (see :meth:`documents`)."""
        if self._full_uid(uid) is None:
            return None
        raise RunNotReadableError(
            f"run {uid!r} is in the JSONL store {self.directory} as documents only "
            "(store.documents(uid)); `bas replay DIR --into TARGET` puts it in a store that "
            "reads its data"
        )

    def __getitem__(self, uid: str) -> Any:
        run = self.find_run(uid)
        if run is None:
            raise NotFoundError(f"no run {uid!r} in the JSONL store {self.directory}")
        return run

    def __contains__(self, uid: object) -> bool:
        return isinstance(uid, str) and self._full_uid(uid) is not None

    def __len__(self) -> int:
        return len(self._index.refresh())

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._index.refresh()))

    def close(self) -> None:
        """Give up the runs still open (never indexed, they were never in the store): their
        files are removed."""
        if self._pipeline is not None:
            for chain in self._pipeline.open_runs():
                self._pipeline.discard(chain.gate.uid)
