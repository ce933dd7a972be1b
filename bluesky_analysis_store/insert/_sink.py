"""The document sink into tiled: bluesky-tiled-plugins' ``TiledWriter`` behind the document gate.

Here "writer" keeps one meaning, a pair's file writer: the thing that takes documents is a sink
(``TiledWriter`` keeps its own name). Imported lazily: ``bluesky_tiled_plugins.writing`` costs
over a second to import.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from ..core._errors import AnalysisStoreError
from ..pairs._pairs import PairRegistry
from ._gate import DocumentWriteError, InvalidDocumentError, RunGate, check_document
from ._insert import GatedRun, RunRoutedPipeline

if TYPE_CHECKING:
    from ..core._documents import RunStart

__all__ = [
    "ConsolidatorConflictError",
    "DocumentWriteError",
    "GatedSink",
    "InvalidDocumentError",
    "analysis_sink",
    "analysis_tiled_writer",
    "check_document",
    "register_tiled_consolidators",
]

#: Single-file mimetypes of our pairs whose tiled adapters take one ``data_uri``.
SINGLE_FILE_MIMETYPES = ("image/tiff", "application/x-npy")


def _single_file_consolidator_class() -> type:
    from bluesky_tiled_plugins.writing.consolidators import ConsolidatorBase
    from tiled.structures.data_source import Asset

    class SingleFileConsolidator(ConsolidatorBase):
        """One file holds the whole stack; tiled's TiffAdapter/NPYAdapter read it as one block.

        The base class registers its asset as an item of ``data_uris`` (a file sequence); the
        single-file adapters take ``data_uri`` instead.
        """

        supported_mimetypes: ClassVar[set[str]] = set(SINGLE_FILE_MIMETYPES)

        def __init__(self, stream_resource: Any, descriptor: Any) -> None:
            super().__init__(stream_resource, descriptor)
            self.assets = [
                Asset(data_uri=self.uri, is_directory=False, parameter="data_uri", num=None)
            ]

    return SingleFileConsolidator


class ConsolidatorConflictError(AnalysisStoreError, RuntimeError):
    """Another consolidator was registered for one of our pairs' mimetypes."""


def register_tiled_consolidators() -> None:
    """Teach TiledWriter our single-file mimetypes (idempotent, add-only).

    ``CONSOLIDATOR_REGISTRY`` is bluesky-tiled-plugins' documented extension point for new
    mimetypes. It is a ``defaultdict``: a plain TiledWriter that met one of our mimetypes
    before us filled in ``ConsolidatorBase`` by looking it up; that default is no registration
    and is replaced. An entry that someone registered on purpose is left alone and reported.

    Raises
    ------
    ConsolidatorConflictError
        If another consolidator already handles one of ``SINGLE_FILE_MIMETYPES``.
    """
    from bluesky_tiled_plugins.writing.consolidators import (
        CONSOLIDATOR_REGISTRY,
        ConsolidatorBase,
    )

    consolidator = None
    for mimetype in SINGLE_FILE_MIMETYPES:
        existing = dict(CONSOLIDATOR_REGISTRY).get(mimetype)
        if existing is not None and existing is not ConsolidatorBase:
            if existing.__name__ != "SingleFileConsolidator":
                raise ConsolidatorConflictError(
                    f"TiledWriter already has consolidator {existing!r} for {mimetype!r}; "
                    "bluesky-analysis-store's TIFF/NPY pairs need its single-file consolidator"
                )
            continue
        consolidator = consolidator or _single_file_consolidator_class()
        CONSOLIDATOR_REGISTRY[mimetype] = consolidator


class SinkFactory:
    """Makes the sink of each run: a TiledWriter on one container, knowing every pair in a
    registry.

    Parameters
    ----------
    container : tiled container client
        Where runs are written (ideally a ``CatalogOfBlueskyRuns`` container).
    registry : PairRegistry, optional
        Its specs are mapped to mimetypes; default: every installed pair.
    close_streams : callable, optional
        ``close_streams() -> bool | None``: whether each run's TiledWriter declares the end of
        its nodes' streams at the stop (``close_stream``, one request per node), asked when the
        first run starts and kept once it answers True or False (None: ask again next run).
        Default: always, as TiledWriter does. The store passes its server's answer
        (:func:`~bluesky_analysis_store.store._streams_route.server_streams`): a server that
        keeps no streaming cache and no webhooks does nothing with those requests.
    **kwargs
        Passed to ``TiledWriter`` (``batch_size``, ``patches``, ...). ``max_array_size``
        defaults to 0: every array kept inside the events becomes an array node. TiledWriter's
        own default keeps arrays of up to 16 elements as list columns of the event table, which
        tiled's client (through dask's ``dataframe.convert-string``) reads back as strings.
    """

    def __init__(
        self,
        container: Any,
        registry: PairRegistry | None = None,
        *,
        close_streams: Callable[[], bool | None] | None = None,
        **kwargs: Any,
    ):
        from ..pairs._pairs import default_registry

        register_tiled_consolidators()
        registry = registry if registry is not None else default_registry()
        # TiledWriter asks for this variation; made once here, it costs no request per run
        self.container = container.include_data_sources()
        #: Spec -> mimetype for legacy resources: our pairs' over the caller's over TiledWriter's
        self.spec_to_mimetype: Mapping[str, str] = {
            **registry.spec_to_mimetype(),
            **kwargs.pop("spec_to_mimetype", {}),
        }
        kwargs.setdefault("max_array_size", 0)
        self.kwargs = kwargs
        self._ask_close_streams = close_streams
        self._close_streams: bool | None = True if close_streams is None else None

    @property
    def close_streams(self) -> bool:
        """Whether the runs' TiledWriters close their nodes' streams (asked once, see above)."""
        if self._close_streams is None:
            assert self._ask_close_streams is not None
            answer = self._ask_close_streams()
            if answer is None:  # could not tell (unreachable): close, and ask again next run
                return True
            self._close_streams = bool(answer)
        return self._close_streams

    def __call__(self) -> Any:
        """A new TiledWriter (bluesky-tiled-plugins) for one run."""
        from bluesky_tiled_plugins.writing.tiled_writer import TiledWriter

        writer_class = TiledWriter if self.close_streams else _tiled_writer_without_streams()
        return writer_class(self.container, spec_to_mimetype=self.spec_to_mimetype, **self.kwargs)


@functools.cache
def _tiled_writer_without_streams() -> type:
    """``TiledWriter`` whose runs skip ``close_stream`` at the stop: everything else is
    TiledWriter's own (its run writer, normalizer, batching, requests).

    ``TiledWriter`` has no option for it: its per-run writer (``_RunWriter``) ends ``stop`` with
    ``_close_stream_tree()``. If a later bluesky-tiled-plugins renames either, this is plain
    ``TiledWriter`` (streams closed, as before), not an error.
    """
    from bluesky_tiled_plugins.writing import tiled_writer

    run_writer = getattr(tiled_writer, "_RunWriter", None)
    if run_writer is None or not hasattr(run_writer, "_close_stream_tree"):
        return tiled_writer.TiledWriter

    class RunWriterWithoutStreams(run_writer):  # type: ignore[misc,valid-type]
        def _close_stream_tree(self) -> None:
            """Nobody listens: the server keeps no streams (see :class:`SinkFactory`)."""

    class TiledWriterWithoutStreams(tiled_writer.TiledWriter):
        """TiledWriter's ``_factory`` with the run writer above (and no backups: the store's
        sinks take none; the spool is the store's)."""

        def _factory(self, name: str, doc: Any) -> tuple[list[Any], list[Any]]:
            if self.backup_directory or self.backup_dictionary is not None:
                return super()._factory(name, doc)
            try:
                writer = callback = RunWriterWithoutStreams(
                    self.client,
                    batch_size=self._batch_size,
                    max_array_size=self._max_array_size,
                    validate=self._validate,
                    ignore_errors=self.ignore_errors,
                )
            except (AttributeError, TypeError):  # TiledWriter's insides changed: its own way
                return super()._factory(name, doc)
            if self._normalizer:
                callback = self._normalizer(
                    patches=self.patches, spec_to_mimetype=self.spec_to_mimetype
                )
                callback.subscribe(writer)
            return [callback], []

    return TiledWriterWithoutStreams


def analysis_sink(container: Any, registry: PairRegistry | None = None, **kwargs: Any) -> GatedSink:
    """A ``TiledWriter`` on ``container`` that understands every pair in ``registry``, behind
    :class:`GatedSink`'s gate (bad or out-of-order documents raise
    :class:`InvalidDocumentError` and are not written).

    Parameters are those of :class:`SinkFactory`.
    """
    return GatedSink(SinkFactory(container, registry, **kwargs))


def analysis_tiled_writer(
    container: Any, registry: PairRegistry | None = None, **kwargs: Any
) -> GatedSink:
    """Deprecated name of :func:`analysis_sink` (it returns a document sink, not a file writer).

    .. deprecated:: 0.1.0
       Use :func:`analysis_sink`; this name warns and will be removed.
    """
    import warnings

    warnings.warn(
        "analysis_tiled_writer is now analysis_sink (a document sink; 'writer' means a pair's "
        "file writer); the old name will be removed",
        DeprecationWarning,
        stacklevel=2,
    )
    return analysis_sink(container, registry, **kwargs)


class GatedSink(RunRoutedPipeline):
    """TiledWriter behind the document gate, one chain per run (``event_model.RunRouter``).

    Each document is checked on its own (:func:`check_document`), then against the documents
    of its run seen so far (:class:`~bluesky_analysis_store.insert._gate.RunGate`), before
    that run's own TiledWriter sees it. Refused: unknown document names, documents that break the
    event-model schema, NaN or infinity anywhere, stream or data key names outside the safe
    alphabet (no ``.`` or ``/``), a document of a run that was not started (or is already
    stopped), a second start with the same uid, events whose keys, value types or array shapes
    disagree with their descriptor, datums before their resource, stream datums before their
    stream resource, and a success stop claiming rows that never arrived. Errors raised by the
    TiledWriter itself become :class:`DocumentWriteError`. A refused document poisons its run: it
    can then only end with a stop that does not claim success.

    Parameters
    ----------
    make_sink : SinkFactory
        Makes each run's TiledWriter.
    """

    def __init__(self, make_sink: SinkFactory) -> None:
        super().__init__(self._gated_run)
        self.make_sink = make_sink

    @property
    def client(self) -> Any:
        """The container runs are written to (as ``TiledWriter.client``)."""
        return self.make_sink.container

    def _gated_run(self, start: RunStart) -> GatedRun:
        gate = RunGate(str(start["uid"]), self.make_sink.spec_to_mimetype)
        return GatedRun(start, self.make_sink(), gate)
