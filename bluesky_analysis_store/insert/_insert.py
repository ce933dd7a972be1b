"""Insert pipelines: each run's documents go through a chain of per-run objects.

Built on ``event_model.RunRouter``, as bluesky-tiled-plugins' ``TiledWriter`` is: the router
follows each document to its run (descriptors, resources, datums, events, stream documents;
legacy resources without ``run_start`` go to every open run), and a factory makes each run's
chain when its start arrives. Everything a run needs to remember lives in its chain and dies
with it: nothing has to "forget" a uid.

Two chains exist:

* :class:`GatedRun`: the document gate (:class:`~._gate.RunGate`), then a TiledWriter of the
  run's own (what :func:`~._sink.analysis_sink` returns);
* :class:`RunInsertion`: the store's, with idempotence (a run already stored is checked, not
  written again) and the durable local spool (write-ahead; the store unreachable: spool only)
  around the gated sink.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast

from ..core._errors import AnalysisStoreError, ProvenanceError, RunConflictError
from ._gate import (
    DocumentWriteError,
    InvalidDocumentError,
    RunGate,
    check_document,
    document_id,
)
from ._runs import stored_run

if TYPE_CHECKING:
    from ..core._documents import (
        DatumPage,
        Document,
        EventPage,
        NamedDocument,
        RunStart,
        RunStop,
    )
    from ._sink import SinkFactory

logger = logging.getLogger("bluesky_analysis_store.insert")

#: Seconds after an unreachable store during which new runs go straight to the spool.
DEFAULT_RETRY_AFTER = 30.0


class _PassThrough:
    """``RunRouter``'s filler: documents pass unchanged (event-model's ``Filler`` would copy
    every event page and try to read files this pipeline only registers)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def event_page(self, doc: Any) -> Any:
        return doc

    def __getattr__(self, name: str) -> Any:  # descriptor, resource, datum_page, ...
        return _ignore


def _ignore(doc: Any) -> None:
    return None


class RunChain(Protocol):
    """One run's documents, in order (events as event pages, datums as datum pages)."""

    gate: RunGate

    def __call__(self, name: str, doc: Document) -> None: ...

    def start_again(self, start: RunStart) -> None:
        """The run's start was sent again while the run is open."""

    def discard(self) -> None:
        """The run is given up: ignore what may still come for it."""


class RunRoutedPipeline:
    """A subscriber ``(name, doc)`` that sends each run's documents through its own chain.

    Every document is first checked on its own (:func:`~._gate.check_document`): the router
    needs well-formed links. A document that belongs to no open run is refused; as it may be a
    document of an open run whose link was garbled, every open run is poisoned (it may no
    longer claim success).

    Parameters
    ----------
    make_chain : callable
        ``make_chain(start) -> RunChain``: does what the start document needs (and raises if
        the run is refused: then nothing of it is kept here).
    """

    def __init__(self, make_chain: Callable[[RunStart], RunChain]) -> None:
        from event_model import RunRouter

        self._make_chain = make_chain
        self._open: dict[str, RunChain] = {}  # the runs between their start and stop
        #: The document being routed, as it was given (the router hands the chains events as
        #: event pages and datums as datum pages; the spool keeps what was given)
        self.given: NamedDocument | None = None
        self._router = RunRouter(
            [self._factory],
            filler_class=_PassThrough,  # type: ignore[arg-type]
        )

    def _factory(self, name: str, start: RunStart) -> tuple[list[Any], list[Any]]:
        return [self._open[start["uid"]]], []

    def chain(self, uid: str) -> RunChain | None:
        """The chain of open run ``uid``, if any."""
        return self._open.get(uid)

    def __call__(self, name: str, doc: Document) -> None:
        # declared a Document, but it comes from outside: check_document finds out whether it is
        if name in ("bulk_events", "bulk_datum"):  # deprecated layouts: their pages instead
            for page_name, page in pages_of_bulk(name, doc):
                self(page_name, page)
            return
        try:
            check_document(name, doc)
        except InvalidDocumentError as error:
            self._poison_owners(name, doc, str(error))
            raise
        self.given = (name, doc)
        try:
            self._route(name, doc)
        finally:
            self.given = None

    def _route(self, name: str, doc: Document) -> None:
        routed = cast("dict[str, Any]", doc)  # event-model types the router's documents as dicts
        if name == "start":
            start = cast("RunStart", doc)  # its name says which document it is (checked)
            uid = start["uid"]
            if uid in self._open:
                self._open[uid].start_again(start)
                return
            self._open[uid] = self._make_chain(start)
            try:
                self._router(name, routed)
            except BaseException:
                self._open.pop(uid, None)
                raise
            return
        if name == "stop":
            stop = cast("RunStop", doc)
            if stop["run_start"] not in self._open:
                raise self._unrouted(name, doc, "'run_start'")
            try:
                self._router(name, routed)
            finally:
                if self._open[stop["run_start"]].gate.closed:
                    self._end(stop["run_start"])
            return
        from event_model import UnresolvableForeignKeyError

        try:
            self._router(name, routed)
        except (KeyError, UnresolvableForeignKeyError):  # a link to nothing the router knows
            raise self._unrouted(name, doc, "its links") from None

    def _unrouted(self, name: str, doc: Mapping[str, Any], via: str) -> InvalidDocumentError:
        reason = (
            f"{document_id(name, doc)} belongs through {via} to no open run here; send a run's "
            "start first, then its descriptors, resources and datums, then the events that use "
            "them, and the stop last"
        )
        self._poison_owners(name, doc, reason)
        return InvalidDocumentError(reason)

    def _poison_owners(self, name: Any, doc: Any, reason: str) -> None:
        """Poison the open run ``doc`` seems to belong to, or every open run if none does."""
        if name == "start":
            return
        owners = [chain for chain in self._open.values() if chain.gate.owns(doc)]
        for chain in owners or list(self._open.values()):
            chain.gate.poison(reason)

    def discard(self, uid: str) -> None:
        """Give up open run ``uid``: its chain ignores the rest, and the router forgets it."""
        chain = self._open.get(uid)
        if chain is None:
            return
        chain.discard()
        self._router.stop({"run_start": uid})  # type: ignore[typeddict-item]  # only the router's cleanup: the chain ignores it
        self._end(uid)

    def _end(self, uid: str) -> None:
        self._open.pop(uid, None)

    def open_runs(self) -> list[RunChain]:
        """The chains of the runs still open."""
        return list(self._open.values())


def pages_of_bulk(name: str, doc: Any) -> list[NamedDocument]:
    """A ``bulk_events`` document as event pages (one per descriptor), a ``bulk_datum`` as a
    datum page: event-model's conversions of its deprecated layouts.

    ``doc`` comes from outside (the deprecated layouts have no TypedDict): it is validated here.
    """
    import event_model

    try:
        event_model.schema_validators[event_model.DocumentNames[name]].validate(doc)
        if name == "bulk_events":
            pages = event_model.bulk_events_to_event_pages(doc)
            return [("event_page", cast("EventPage", dict(p))) for p in pages]
        return [("datum_page", cast("DatumPage", dict(event_model.bulk_datum_to_datum_page(doc))))]
    except Exception as error:  # jsonschema's ValidationError, or a malformed layout
        raise InvalidDocumentError(
            f"{name} document is malformed: {getattr(error, 'message', error)!s:.300}"
        ) from None


class GatedRun:
    """One run: the gate, then a TiledWriter of its own. A refused document poisons the run:
    its later documents are refused too, but for a stop that does not claim success, so that a
    run that lost a document never looks complete."""

    def __init__(self, start: RunStart, sink: Any, gate: RunGate) -> None:
        self.gate = gate
        self.sink = sink  # the run's own TiledWriter
        self._discarded = False
        self._write("start", start)

    def __call__(self, name: str, doc: Document) -> None:
        if name == "start" or self._discarded:
            return
        try:
            self.gate.check(name, doc)
        except InvalidDocumentError as error:
            self.gate.poison(str(error))
            raise
        self._write(name, doc)
        self.gate.record(name, doc)

    def _write(self, name: str, doc: Document) -> None:
        try:
            self.sink(name, doc)
        except Exception as error:
            wrapped = DocumentWriteError(
                f"tiled did not accept {document_id(name, doc)}: {type(error).__name__}: "
                f"{error!s:.2000}"  # the server says what and why, naming long paths
            )
            wrapped.response = getattr(error, "response", None)
            self.gate.poison(str(wrapped))
            raise wrapped from error

    def start_again(self, start: RunStart) -> None:
        raise InvalidDocumentError(f"{document_id('start', start)}: this run is already open")

    def discard(self) -> None:
        self._discarded = True


def comparable(doc: Mapping[str, Any]) -> Any:
    """``doc`` as it reads back from tiled: JSON types only (tuples become lists, ...)."""
    import json

    return json.loads(json.dumps(doc, sort_keys=True, default=str))


def _difference(stored: Mapping[str, Any], given: Mapping[str, Any]) -> str:
    keys = sorted(
        k
        for k in set(stored) | set(given)
        if comparable({k: stored.get(k)}) != comparable({k: given.get(k)})
    )
    return ", ".join(keys[:8]) + (" ..." if len(keys) > 8 else "")


def check_stored_copy(
    uid: str, name: str, stored: Mapping[str, Any] | None, doc: Mapping[str, Any]
) -> None:
    """A run sent again: its ``name`` document (start or stop) must equal the stored one.

    Raises
    ------
    RunConflictError
        The stored run has no such document (it was never completed) or a different one.
    """
    if stored is None:
        raise RunConflictError(
            f"run {uid} is already in the store but was never completed (no stop "
            "document); run `bas fsck --repair` to remove it, then insert it again"
        )
    if comparable(stored) != comparable(doc):
        raise RunConflictError(
            f"run {uid} is already in the store with a different {name} document "
            f"(differing keys: {_difference(stored, doc)}); a uid names one run: give the "
            "new run a new uid"
        )


def _is_conflict(error: BaseException) -> bool:
    response = getattr(error, "response", None)
    return getattr(response, "status_code", None) == 409


class StorePipeline(RunRoutedPipeline):
    """``AnalysisStore.insert``: per run, provenance required, idempotence, the spool, the gate
    and a TiledWriter (see :class:`RunInsertion`).

    Parameters
    ----------
    runs : CatalogOfBlueskyRuns client
        Where the runs go.
    make_sink : SinkFactory
        Returns a new TiledWriter on ``runs`` (one per run); its ``spec_to_mimetype`` is the
        gate's too (legacy resources).
    spool : Path, optional
        The durable local spool's directory.
    retry_after : float
        Seconds after the store was found unreachable during which new runs go straight to the
        spool without trying the store.
    """

    def __init__(
        self,
        runs: Any,
        make_sink: SinkFactory,
        *,
        spool: Path | None = None,
        retry_after: float = DEFAULT_RETRY_AFTER,
    ) -> None:
        super().__init__(self._insertion)
        self.runs = runs
        self.make_sink = make_sink
        self.spool = spool
        self.retry_after = retry_after
        self._offline_until = 0.0
        self._fresh: set[str] = set()  # uids just made, known not to be stored

    def _insertion(self, start: RunStart) -> RunInsertion:
        return RunInsertion(self, start)

    # --------------------------------------------------------------- shared by the runs

    @property
    def offline(self) -> bool:
        """The store was found unreachable less than ``retry_after`` seconds ago."""
        return time.monotonic() < self._offline_until

    def mark_unreachable(self) -> None:
        """The store could not be reached: new runs go to the spool without trying it."""
        self._offline_until = time.monotonic() + self.retry_after

    def expect_new(self, uid: str) -> None:
        """``uid`` was just made (a new UUID4): its start needs no "is it there?" request."""
        self._fresh.add(uid)

    def take_fresh(self, uid: str) -> bool:
        fresh = uid in self._fresh
        self._fresh.discard(uid)
        return fresh

    def created(self, uid: str) -> bool:
        """Whether run ``uid`` is open here and its node was created by this pipeline."""
        chain = self.chain(uid)
        return isinstance(chain, RunInsertion) and chain.new

    def close(self) -> None:
        """Close the spool files of runs still open (kept for replay, not deleted)."""
        for chain in self.open_runs():
            if isinstance(chain, RunInsertion):
                chain.close_spool(keep=True)


def require_provenance(start: Mapping[str, Any]) -> None:
    """Refuse a run without valid provenance: an analysis store holds analysis runs only."""
    from ..provenance._provenance import provenance_problem

    problem = provenance_problem({"start": start})
    if problem is not None:
        raise ProvenanceError(
            f"run {start.get('uid')!r:.80} cannot go into the analysis store: {problem}. Raw "
            "scans belong in a raw catalog: subscribe RE.subscribe(raw_runs_only(TiledWriter("
            "raw_catalog))) and RE.subscribe(analysis_runs_only(store.insert))"
        )


class RunInsertion:
    """One run on its way into the store: spool (write-ahead), then idempotence, the gate and
    the run's TiledWriter.

    A run whose uid is already stored is a copy: its start and stop must equal the stored ones
    (else :class:`RunConflictError`), and nothing is written. When the store cannot be reached,
    the rest of the run goes to the spool only and nothing is raised; a spool that cannot write
    (full disk, permissions) is logged and the run is inserted directly.
    """

    def __init__(self, pipeline: StorePipeline, start: RunStart) -> None:
        require_provenance(start)
        self.pipeline = pipeline
        self.uid = str(start["uid"])
        self.gate = RunGate(self.uid, pipeline.make_sink.spec_to_mimetype)
        self.new = False
        self.online = True
        self._run: GatedRun | None = None
        self._discarded = False
        self._kept: Path | None = None  # the spool file kept for replay, if any
        self.spooled = self._open_spool(start)
        if self.spooled is not None and pipeline.offline:
            self._go_offline("it was unreachable moments ago")
            return
        try:
            self.new = self._start(start)
        except Exception as error:
            if self._store_unreachable(error):
                self._go_offline(f"{type(error).__name__}: {error!s:.200}")
                return
            self.close_spool(keep=False)  # refused outright: nothing to replay
            raise

    # --------------------------------------------------------------- the spool

    def _open_spool(self, start: RunStart) -> Any:
        if self.pipeline.spool is None:
            return None
        from ._spool import SpooledRun

        try:
            return SpooledRun(self.pipeline.spool, start)
        except OSError as error:
            self._spool_failed(error)
            return None

    def _spool_failed(self, error: OSError) -> None:
        if not self.online:
            raise AnalysisStoreError(
                f"run {self.uid}: the analysis store cannot be reached and the spool "
                f"{self.pipeline.spool} cannot be written ({error}); its documents are lost "
                "unless the store or the spool comes back"
            ) from error
        logger.error(
            "the spool %s cannot be written (%s): run %s is inserted without a local copy; "
            "free the disk or fix its permissions",
            self.pipeline.spool,
            error,
            self.uid,
        )
        self.spooled = None

    def _spool(self, name: str, doc: Document) -> None:
        if self.spooled is None:
            return
        try:
            self.spooled.append(name, doc, sync=not self.online)
        except OSError as error:
            spooled, self.spooled = self.spooled, None
            spooled.abandon()
            self._spool_failed(error)

    def close_spool(self, *, keep: bool) -> None:
        if self.spooled is not None:
            spooled, self.spooled = self.spooled, None
            spooled.close(keep=keep)

    def _store_unreachable(self, error: BaseException) -> bool:
        from ._spool import is_unreachable

        if self.spooled is None or not is_unreachable(error):
            return False
        self.pipeline.mark_unreachable()
        return True

    def _go_offline(self, why: str) -> None:
        self.online = False
        assert self.spooled is not None
        self.spooled.sync()  # from now on the spool holds the only copy
        logger.warning(
            "the analysis store cannot be reached (%s): run %s goes to the spool %s; "
            "`bas replay` inserts it once the store is back",
            why,
            self.uid,
            self.spooled.path,
        )

    # --------------------------------------------------------------- the store

    def _start(self, start: RunStart) -> bool:
        """Whether this run is new (and was started in the store)."""
        runs = self.pipeline.runs
        if self.pipeline.take_fresh(self.uid) or stored_run(runs, self.uid) is None:
            try:
                self._run = GatedRun(start, self.pipeline.make_sink(), self.gate)
                return True
            except Exception as error:
                # tiled creates a node atomically: 409 if the uid exists after all (another
                # process created the same run a moment ago)
                if not _is_conflict(error):
                    raise
                self.gate.refused.clear()
        self._check_stored("start", start)
        return False

    def _check_stored(self, name: str, doc: Mapping[str, Any]) -> None:
        run = stored_run(self.pipeline.runs, self.uid)
        check_stored_copy(self.uid, name, None if run is None else run.metadata.get(name), doc)

    def start_again(self, start: RunStart) -> None:
        try:
            self._check_stored("start", start)
        except RunConflictError:
            self.gate.poison(f"a different start document with uid {self.uid}")
            raise

    def discard(self) -> None:
        self._discarded = True
        self.close_spool(keep=False)
        if self._kept is not None:  # a refused stop kept it for replay; the run is taken back
            self._kept.unlink(missing_ok=True)
            self._kept = None

    def __call__(self, name: str, doc: Document) -> None:
        if name == "start" or self._discarded:
            return
        if name == "stop":
            self._stop(cast("RunStop", doc))
            return
        self._spool(*(self.pipeline.given or (name, doc)))
        if not self.online:
            return
        try:
            self._insert(name, doc)
        except Exception as error:
            if not self._store_unreachable(error):
                raise
            self._go_offline(f"{type(error).__name__}: {error!s:.200}")

    def _insert(self, name: str, doc: Document) -> None:
        if self._run is not None:
            self._run(name, doc)
        elif name == "stop":
            self._check_stored("stop", doc)
            self.gate.record(name, doc)

    def _stop(self, stop: RunStop) -> None:
        """The stop is inserted first and spooled only if that fails, so that a spool file
        holds a stop only when its run could not be inserted whole."""
        if self.online:
            try:
                self._insert("stop", stop)
            except Exception as error:
                if not self._store_unreachable(error):
                    self._keep_in_spool(stop)
                    raise
                self._go_offline(f"{type(error).__name__}: {error!s:.200}")
            else:
                self.close_spool(keep=False)  # in the store whole
                return
        self.gate.closed = True
        self._keep_in_spool(stop)

    def _keep_in_spool(self, stop: RunStop) -> None:
        if self.spooled is None:
            return
        self._spool("stop", stop)
        if self.spooled is not None:
            logger.warning(
                "run %s is in the spool (%d documents): %s",
                self.uid,
                self.spooled.documents,
                self.spooled.path,
            )
            self._kept = self.spooled.path
            self.close_spool(keep=True)
