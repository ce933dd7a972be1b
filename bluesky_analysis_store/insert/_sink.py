"""The document sink into tiled: bluesky-tiled-plugins' ``TiledWriter`` behind the document gate.

Here "writer" keeps one meaning, a pair's file writer: the thing that takes documents is a sink
(``TiledWriter`` keeps its own name). Imported lazily: ``bluesky_tiled_plugins.writing`` costs
over a second to import.
"""

from __future__ import annotations

from collections.abc import Mapping
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
    **kwargs
        Passed to ``TiledWriter`` (``batch_size``, ``patches``, ...). ``max_array_size``
        defaults to 0: every array kept inside the events becomes an array node. TiledWriter's
        own default keeps arrays of up to 16 elements as list columns of the event table, which
        tiled's client (through dask's ``dataframe.convert-string``) reads back as strings.
    """

    def __init__(self, container: Any, registry: PairRegistry | None = None, **kwargs: Any):
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

    def __call__(self) -> Any:
        """A new TiledWriter (bluesky-tiled-plugins) for one run."""
        from bluesky_tiled_plugins.writing.tiled_writer import TiledWriter

        return TiledWriter(self.container, spec_to_mimetype=self.spec_to_mimetype, **self.kwargs)


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
