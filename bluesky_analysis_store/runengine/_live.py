"""``LiveAnalysis``: run an analysis on each raw run as a RunEngine produces it, save the result.

Subscribe one to a RunEngine: ``RE.subscribe(LiveAnalysis(analysis, store))``. Documents are
collected on the RunEngine thread (cheap: they are kept, not copied); the analysis runs when the
raw run stops, by default on one worker thread so that a slow analysis never stalls data taking.
Whatever happens inside the analysis or the save, the RunEngine never sees an exception: the
failure is logged with the raw uid and recorded in the store as a failed analysis run.
"""

from __future__ import annotations

import logging
import threading
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_for_futures
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from ..core._errors import (
    AnalysisTimeoutError,
    InputTypeError,
    NotFoundError,
    ProvenanceError,
)
from ..provenance._capture import capture_code, capture_environment, describe_parent
from ..provenance._parameters import checked_parameters
from ..provenance._policy import ProvenancePolicy
from ..provenance._provenance import Provenance
from ..provenance._samples import with_parents_sample
from ._routing import is_analysis_run

if TYPE_CHECKING:
    from ..compose._store_protocol import Store
    from ..core._documents import (
        Document,
        Event,
        EventDescriptor,
        EventPage,
        NamedDocument,
        RunStart,
        RunStop,
    )

logger = logging.getLogger("bluesky_analysis_store.live")


@dataclass(frozen=True)
class AnalysisFailure:
    """An analysis that did not produce its run for one raw run.

    Attributes
    ----------
    raw_uid : str
        The raw run the analysis was given.
    analysis_name, analysis_version : str
        Which analysis failed.
    error : str
        ``"ExceptionType: message"``.
    traceback : str
        The full traceback, for the log and for whoever debugs it.
    record_uid : str or None
        The failed-analysis run recorded in the store (``None`` if even that could not be
        written, e.g. the store is unreachable).
    """

    raw_uid: str
    analysis_name: str
    analysis_version: str | None
    error: str
    traceback: str
    record_uid: str | None


class CollectedStream:
    """One stream of a run collected from its documents: the same ``read()`` as tiled's.

    ``stream.read()`` is an ``xarray.Dataset`` with one variable per data key along ``time``,
    so an analysis written against a tiled ``BlueskyRun`` works unchanged on a live run.
    ``stream[key]`` is one column as a numpy array.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.descriptors: list[EventDescriptor] = []
        self.times: list[float] = []
        self.columns: dict[str, list[Any]] = {}

    @property
    def metadata(self) -> dict[str, Any]:
        return {"descriptors": self.descriptors}

    def add_event(self, event: Event) -> None:
        self.times.append(event["time"])
        for key, value in event["data"].items():
            self.columns.setdefault(key, []).append(value)

    def __len__(self) -> int:
        return len(self.times)

    def keys(self) -> list[str]:
        return list(self.columns)

    def __getitem__(self, key: str) -> np.ndarray:
        try:
            column = self.columns[key]
        except KeyError:
            external = [
                k
                for d in self.descriptors
                for k, v in d["data_keys"].items()
                if v.get("external") == "STREAM:"
            ]
            hint = (
                f"; {key!r} is written by its detector (stream resource): read it from the raw "
                "catalog with LiveAnalysis(..., source=store.raw)"
                if key in external
                else ""
            )
            raise NotFoundError(
                f"stream {self.name!r} has no data key {key!r}; it has {sorted(self.columns)}{hint}"
            ) from None
        return np.asarray(column)

    def read(self) -> Any:
        """The stream as an ``xarray.Dataset`` (variables along ``time``)."""
        import xarray

        variables = {}
        for key in self.columns:
            values = self[key]
            dims = ("time", *(f"dim_{key}_{i}" for i in range(values.ndim - 1)))
            variables[key] = (dims, values)
        return xarray.Dataset(variables, coords={"time": np.asarray(self.times, dtype=float)})


class CollectedRun:
    """A raw run rebuilt from its documents, shaped like tiled's ``BlueskyRun``.

    ``run.metadata["start"]`` and ``["stop"]``; ``run["primary"].read()``; ``run.documents``
    (every ``(name, doc)`` in order, values of datum-backed keys filled).
    """

    def __init__(self, start: RunStart) -> None:
        self.start = start
        self.stop: RunStop | None = None
        self.documents: list[NamedDocument] = [("start", start)]
        self._streams: dict[str, CollectedStream] = {}
        self._stream_of_descriptor: dict[str, CollectedStream] = {}

    @property
    def metadata(self) -> dict[str, Any]:
        return {"start": self.start, "stop": self.stop}

    def add_descriptor(self, descriptor: EventDescriptor) -> None:
        name = descriptor.get("name", "primary")
        stream = self._streams.setdefault(name, CollectedStream(name))
        stream.descriptors.append(descriptor)
        self._stream_of_descriptor[descriptor["uid"]] = stream

    def add_event(self, event: Event) -> str:
        """Keep a (filled) event; return its stream's name."""
        stream = self._stream_of_descriptor[event["descriptor"]]
        stream.add_event(event)
        return stream.name

    def __getitem__(self, stream: str) -> CollectedStream:
        try:
            return self._streams[stream]
        except KeyError:
            raise NotFoundError(
                f"run {self.start['uid']} has no stream {stream!r}; it has {sorted(self._streams)}"
            ) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._streams)

    def __contains__(self, stream: object) -> bool:
        return stream in self._streams

    def keys(self) -> list[str]:
        return list(self._streams)


@dataclass
class _Collecting:
    """One raw run being collected (a ``RunRouter`` callback): it dies with the run."""

    live: LiveAnalysis
    run: CollectedRun
    pending: list[Future[Any]] = field(default_factory=list)

    def __call__(self, name: str, doc: Document) -> None:
        """Documents as the router gives them: filled, events as event pages."""
        # the name says which document it is
        if name == "start":
            return
        if name == "stop":
            self.run.stop = cast("RunStop", doc)
            self.run.documents.append((name, doc))
            self.live._finish(self)
            return
        if name == "descriptor":
            self.run.add_descriptor(cast("EventDescriptor", doc))
        elif name == "event_page":
            from event_model import unpack_event_page

            for event in unpack_event_page(cast("EventPage", doc)):
                self.live._on_event(self, cast("Event", dict(event)))
        self.run.documents.append((name, doc))


def _analysis_parameters(analysis: Any, parameters: Mapping[str, Any] | None) -> dict[str, Any]:
    """The parameters given, else the analysis' own ``parameters``; checked against what the
    analysis declares (as reprocessing checks them, so both record the same lineage)."""
    if parameters is None:
        declared = getattr(analysis, "parameters", None)
        parameters = dict(declared) if isinstance(declared, Mapping) else {}
    return checked_parameters(analysis, parameters, repr(getattr(analysis, "name", analysis)))


class LiveAnalysis:
    """Analyse each raw run a RunEngine produces and save the derived run with provenance.

    Parameters
    ----------
    analysis : callable
        ``analysis(run, **parameters) -> (data_dicts, md)``: a function (give it ``name`` and
        ``version`` attributes, or pass them here) or an instance of a class with ``name``,
        ``version``, optional ``parameters`` and ``__call__``. ``run`` is a
        :class:`CollectedRun` (``run["primary"].read()`` is an ``xarray.Dataset``, as for a
        tiled run), or the run read back from ``source``. A streaming analysis also defines
        ``begin(start_doc)`` and/or ``event(stream_name, data)``, called for each event as it
        arrives (in order, on the worker), before the final call at stop.
    store : Store
        Where derived runs (and failure records) go: any store of the
        :class:`~bluesky_analysis_store.compose._store_protocol.Store` protocol (a tiled
        ``AnalysisStore``, the null store ``null:``, a JSONL store).
    parameters : mapping, optional
        Keyword arguments of the analysis, recorded in the provenance (and so in the lineage
        hash). Default: the analysis' own ``parameters`` attribute, if any. The raw run's sample
        keys (``sample_uuid``, ``sample_name``, ...) are copied into the derived run unless the
        analysis' ``md`` sets them.
    plan_names : iterable of str, optional
        Analyse only runs whose ``plan_name`` is one of these.
    accept : callable, optional
        ``accept(start_doc) -> bool``: analyse only the runs it accepts (after ``plan_names``).
        Analysis runs (those with provenance) are never analysed, so that an analysis cannot
        feed on its own output.
    exit_statuses : iterable of str
        Analyse raw runs that ended with one of these (default: only ``"success"``; an aborted
        scan is skipped and logged).
    source : catalog, optional
        Give the analysis ``source[raw_uid]`` (e.g. ``store.raw``, written by a TiledWriter
        subscribed *before* this callback) instead of the collected documents; needed when the
        data sit in detector-written files (stream resources).
    handler_registry : mapping, optional
        Extra ``{spec: handler}`` to fill datum-backed values (the store's pairs are included).
    worker : bool
        Run analyses on one background thread (default ``True``): ``RE(...)`` returns as soon
        as the scan is done. Call :meth:`wait` before reading results. ``False`` runs them on
        the RunEngine thread, inside the stop document's callback.
    policy : ProvenancePolicy, optional
        What the provenance must satisfy (checked once here, at subscription time, for the
        code's name and version).
    writers : mapping, optional
        Per-key writers for :meth:`AnalysisStore.save`.
    name, version : str, optional
        Override the analysis' own.

    Attributes
    ----------
    saved : dict
        ``{raw_uid: derived_uid}`` of this session.
    failures : list of AnalysisFailure
        The raw runs whose analysis failed this session (``store.failed_analyses()`` finds
        them in later sessions too).
    """

    def __init__(
        self,
        analysis: Callable[..., Any],
        store: Store,
        *,
        parameters: Mapping[str, Any] | None = None,
        plan_names: Iterable[str] | None = None,
        accept: Callable[[Mapping[str, Any]], bool] | None = None,
        exit_statuses: Iterable[str] = ("success",),
        source: Any = None,
        handler_registry: Mapping[str, Any] | None = None,
        worker: bool = True,
        policy: ProvenancePolicy | None = None,
        writers: Mapping[str, Any] | None = None,
        name: str | None = None,
        version: str | None = None,
    ) -> None:
        if not callable(analysis):
            raise InputTypeError(
                f"analysis must be callable as analysis(run, **parameters); got {analysis!r:.80}"
            )
        self.analysis = analysis
        self.store = store
        self.parameters = _analysis_parameters(analysis, parameters)
        self.plan_names = None if plan_names is None else frozenset(plan_names)
        self.accept = accept
        self.exit_statuses = frozenset(exit_statuses)
        self.source = source
        self.policy = policy if policy is not None else ProvenancePolicy()
        self.writers = writers
        # the store's handlers are asked for at the first document, not now: a store still
        # opening in the background (the beamline profile's) is then waited for by the scan
        self._extra_handlers = dict(handler_registry or {})
        self._router: Any = None
        # Code and environment do not change within a session: capture them once, and refuse
        # now (not at every scan) an analysis whose provenance the policy would refuse.
        self._code = capture_code(analysis, name=name, version=version)
        self._environment = capture_environment()
        if self.policy.require_version and not self._code.version:
            raise ProvenanceError(
                f"analysis {self._code.name!r} has no version; give it a version attribute, "
                "pass version=..., or use a relaxed policy"
            )
        self.saved: dict[str, str] = {}
        self.failures: list[AnalysisFailure] = []
        self._executor = (
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="bas-live") if worker else None
        )
        self._futures: set[Future[Any]] = set()
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return self._code.name

    def __repr__(self) -> str:
        return f"LiveAnalysis({self.name!r} {self._code.version}, {len(self.saved)} saved)"

    # --- RunEngine side -------------------------------------------------------------------

    def __call__(self, name: str, doc: Document) -> None:
        """Receive one document (the RunEngine subscriber signature); never raises."""
        try:
            self._receive(name, doc)
        except Exception:  # a bug here must not abort data taking either
            logger.exception("LiveAnalysis %s could not process a %s document", self.name, name)

    def _wanted(self, start: Mapping[str, Any]) -> bool:
        if is_analysis_run(start):
            return False
        if self.plan_names is not None and start.get("plan_name") not in self.plan_names:
            return False
        return self.accept is None or bool(self.accept(start))

    def _receive(self, name: str, doc: Document) -> None:
        if self._router is None:
            with self._lock:
                if self._router is None:
                    from event_model import RunRouter

                    handlers = {**self.store.registry.handler_registry(), **self._extra_handlers}
                    # the router follows each document to its run and fills datum-backed values
                    self._router = RunRouter([self._factory], handler_registry=handlers)
        self._router(name, cast("dict[str, Any]", doc))  # event-model types it as a dict

    def _factory(self, name: str, start: RunStart) -> tuple[list[Any], list[Any]]:
        """A collector for each raw run this analysis wants; nothing for the others."""
        if not self._wanted(start):
            return [], []
        collecting = _Collecting(self, CollectedRun(start))
        begin = getattr(self.analysis, "begin", None)
        if callable(begin):
            self._submit(collecting, begin, start)
        return [collecting], []

    def _on_event(self, collecting: _Collecting, event: Event) -> None:
        stream = collecting.run.add_event(event)
        on_event = getattr(self.analysis, "event", None)
        if callable(on_event):
            self._submit(collecting, on_event, stream, event["data"])

    def _submit(self, collecting: _Collecting, function: Callable[..., Any], *args: Any) -> None:
        if self._executor is None:
            try:
                function(*args)
            except Exception as error:
                collecting.pending.append(_failed_future(error))
            return
        collecting.pending.append(self._track(self._executor.submit(function, *args)))

    def _track(self, future: Future[Any]) -> Future[Any]:
        with self._lock:
            self._futures.add(future)
        future.add_done_callback(self._untrack)
        return future

    def _untrack(self, future: Future[Any]) -> None:
        with self._lock:
            self._futures.discard(future)

    def _finish(self, collecting: _Collecting) -> None:
        run = collecting.run
        status = None if run.stop is None else run.stop.get("exit_status")
        if status not in self.exit_statuses:
            logger.info(
                "%s: raw run %s ended with exit_status=%r; not analysed (exit_statuses=%s)",
                self.name,
                run.start["uid"],
                status,
                sorted(self.exit_statuses),
            )
            return
        if self._executor is None:
            self._analyse(collecting)
        else:
            self._track(self._executor.submit(self._analyse, collecting))

    # --- analysis side (worker thread by default) -------------------------------------------

    def _provenance(self, start: Mapping[str, Any]) -> Provenance:
        return Provenance(
            code=self._code,
            environment=self._environment,
            parents=(describe_parent(start, _catalog_name(self.source)),),
            parameters=self.parameters,
        )

    def _analyse(self, collecting: _Collecting) -> str | None:
        run = collecting.run
        raw_uid = run.start["uid"]
        try:
            for earlier in collecting.pending:  # a streaming step that failed fails the run
                earlier.result()
            target = self.source[raw_uid] if self.source is not None else run
            data_dicts, md = self.analysis(target, **self.parameters)
            md = with_parents_sample(md, [cast("Mapping[str, Any]", run.start)])
            uid = self.store.save(
                data_dicts,
                md,
                provenance=self._provenance(run.start),
                policy=self.policy,
                writers=self.writers,
            )
        except Exception as error:
            self._record_failure(run.start, error)
            return None
        self.saved[raw_uid] = uid
        logger.info("%s: saved derived run %s from raw run %s", self.name, uid, raw_uid)
        return uid

    def _record_failure(self, start: Mapping[str, Any], error: Exception) -> None:
        raw_uid = start["uid"]
        message = f"{type(error).__name__}: {error}"
        details = "".join(traceback.format_exception(error))
        logger.error(
            "%s %s failed on raw run %s: %s\n%s",
            self.name,
            self._code.version,
            raw_uid,
            message,
            details,
        )
        record_uid = None
        try:
            record_uid = self.store.record_failure(
                self._provenance(start), message, policy=self.policy
            )
        except Exception:
            logger.exception("%s: could not record the failure on raw run %s", self.name, raw_uid)
        self.failures.append(
            AnalysisFailure(raw_uid, self.name, self._code.version, message, details, record_uid)
        )

    # --- user side -------------------------------------------------------------------------

    def wait(self, timeout: float | None = None) -> None:
        """Block until every analysis queued so far has finished (saved or recorded as failed).

        Raises
        ------
        TimeoutError
            If they have not all finished within ``timeout`` seconds.
        """
        with self._lock:
            futures = set(self._futures)
        _, not_done = wait_for_futures(futures, timeout=timeout)
        if not_done:
            raise AnalysisTimeoutError(
                f"{len(not_done)} analyses of {self.name!r} still running after {timeout} s"
            )

    def close(self) -> None:
        """Finish what is queued, then stop the worker."""
        if self._executor is not None:
            self._executor.shutdown(wait=True)


def _failed_future(error: Exception) -> Future[Any]:
    future: Future[Any] = Future()
    future.set_exception(error)
    return future


def _catalog_name(source: Any) -> str | None:
    uri = getattr(source, "uri", None)
    return uri if isinstance(uri, str) else None
