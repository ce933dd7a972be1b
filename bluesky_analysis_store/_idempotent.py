"""Idempotent, conflict-safe insertion of document streams into a tiled catalog of runs.

A run is known by its start document's uid. Inserting a run that is already in the catalog with
the same start (and, once it has one, the same stop) does nothing; the same uid with different
content is a :class:`RunConflictError`. Two inserters racing on the same run are settled by
tiled itself: creating the run's node is atomic, and the loser finds the winner's node.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ._errors import RunConflictError
from ._tiled_writer import CheckedTiledWriter, InvalidDocumentError, check_document


def comparable(doc: Mapping[str, Any]) -> Any:
    """``doc`` as it reads back from tiled: JSON types only (tuples become lists, ...)."""
    return json.loads(json.dumps(doc, sort_keys=True, default=str))


def _difference(stored: Mapping[str, Any], given: Mapping[str, Any]) -> str:
    keys = sorted(
        k
        for k in set(stored) | set(given)
        if comparable({k: stored.get(k)}) != comparable({k: given.get(k)})
    )
    return ", ".join(keys[:8]) + (" ..." if len(keys) > 8 else "")


def _is_conflict(error: Exception) -> bool:
    response = getattr(error, "response", None)
    return getattr(response, "status_code", None) == 409


class IdempotentInserter:
    """A subscriber ``(name, doc)`` that inserts runs once, however often they are sent.

    Parameters
    ----------
    runs : CatalogOfBlueskyRuns client
        Where the runs are.
    writer : CheckedTiledWriter
        Inserts the documents of a new run.
    """

    def __init__(self, runs: Any, writer: CheckedTiledWriter) -> None:
        self.runs = runs
        self.writer = writer
        self._new: dict[str, bool] = {}  # start uid -> the run is ours to write (else: a copy)
        self._owner: dict[str, str] = {}  # descriptor / resource uid -> start uid
        self._fresh: set[str] = set()  # uids just made, known not to be stored

    def _run_of(self, name: str, doc: Any) -> str | None:
        """The start uid of the run ``doc`` belongs to, if this inserter knows it."""
        if not isinstance(doc, Mapping):
            return None
        run_start = doc.get("run_start")
        if name != "datum" and isinstance(run_start, str):
            return run_start
        for link in ("descriptor", "resource", "stream_resource"):
            target = doc.get(link)
            if isinstance(target, str) and target in self._owner:
                return self._owner[target]
        return None

    def __call__(self, name: str, doc: dict[str, Any]) -> None:
        if name == "start":
            check_document(name, doc)  # its uid decides what happens next
            uid = doc["uid"]
            if uid in self._new:  # sent again while open
                self._check_start(doc, open_here=True)
                return
            self._new[uid] = self._start(doc)
            return
        uid = self._run_of(name, doc)
        if uid is None or uid not in self._new:
            ident = doc.get("uid", doc.get("datum_id", "")) if isinstance(doc, Mapping) else ""
            reason = (
                f"{name} document {ident!r:.80} belongs to no run being inserted; send a run's "
                "start document before its other documents"
            )
            # it may be a document of an open run whose link was garbled: none of them may
            # look complete now
            self.writer.poison(reason)
            raise InvalidDocumentError(reason)
        if self._new[uid]:
            self.writer.write(name, doc)  # checked there; a refused document poisons the run
        else:
            check_document(name, doc)
            if name == "stop":
                self._check_stop(doc)
        if name in ("descriptor", "resource", "stream_resource"):
            self._owner[doc["uid"]] = uid
        if name == "stop":
            self.forget(uid)

    def created(self, uid: str) -> bool:
        """Whether run ``uid`` is open here and its node was created by this inserter."""
        return self._new.get(uid, False)

    def forget(self, uid: str) -> None:
        """Stop following run ``uid`` (its later documents belong to no run here)."""
        self._new.pop(uid, None)
        for key in [k for k, v in self._owner.items() if v == uid]:
            del self._owner[key]

    def expect_new(self, uid: str) -> None:
        """``uid`` was just made (a new UUID4): its start needs no "is it there?" request."""
        self._fresh.add(uid)

    def _start(self, start: dict[str, Any]) -> bool:
        """Whether this run is new (and was started in the catalog)."""
        uid = start["uid"]
        fresh = uid in self._fresh
        self._fresh.discard(uid)
        if fresh or uid not in self.runs:
            try:
                self.writer.write("start", start, document_checked=True)
                return True
            except Exception as error:
                # tiled creates a node atomically: 409 if the uid exists after all (another
                # process created the same run a moment ago)
                if not _is_conflict(error):
                    raise
        self._check_start(start)
        return False

    def _stored(self, uid: str) -> Mapping[str, Any]:
        return self.runs[uid].metadata

    def _check_start(self, start: Mapping[str, Any], *, open_here: bool = False) -> None:
        stored = self._stored(start["uid"])["start"]
        if comparable(stored) != comparable(start):
            if open_here:
                self.writer.poison(
                    f"a different start document with uid {start['uid']}", start["uid"]
                )
            raise RunConflictError(
                f"run {start['uid']} is already in the store with a different start document "
                f"(differing keys: {_difference(stored, start)}); a uid names one run: give the "
                "new run a new uid"
            )

    def _check_stop(self, stop: Mapping[str, Any]) -> None:
        stored = self._stored(stop["run_start"]).get("stop")
        if stored is None:
            raise RunConflictError(
                f"run {stop['run_start']} is already in the store but was never completed (no "
                "stop document); run `bas fsck --repair` to remove it, then insert it again"
            )
        if comparable(stored) != comparable(stop):
            raise RunConflictError(
                f"run {stop['run_start']} is already in the store with a different stop "
                f"document (differing keys: {_difference(stored, stop)})"
            )
