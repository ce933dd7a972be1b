"""The insert pipeline of the stores without tiled (null, JSONL): the same checks as the tiled
store's, a sink of the store's own at the end.

Per run (:class:`LocalRun`): provenance required (:func:`~._insert.require_provenance`), a run
already kept is a copy checked against it (:func:`~._insert.check_stored_copy`), every file a
resource names must lie inside the store's root (resolved: symlinks followed), then the
document gate (:class:`~._gate.RunGate`, through :class:`~._insert.GatedRun`) before the sink.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ._gate import InvalidDocumentError, RunGate, document_id
from ._insert import GatedRun, RunRoutedPipeline, check_stored_copy, require_provenance

if TYPE_CHECKING:
    from ..core._documents import Document, RunStart


class LocalSink(Protocol):
    """Where one run's accepted documents go (a file, or nowhere)."""

    def __call__(self, name: str, doc: Document) -> None: ...

    def discard(self) -> None:
        """The run is taken back: remove what was kept of it."""


class LocalPipeline(RunRoutedPipeline):
    """``insert`` of a store without tiled.

    Parameters
    ----------
    root : Path
        The store's root: every file a resource names must resolve inside it.
    spec_to_mimetype : mapping
        The gate's map for legacy resources (the store's pairs').
    make_sink : callable
        ``make_sink(start) -> LocalSink`` for a new run.
    kept : callable
        ``kept(uid) -> {"start": ..., "stop": ...}`` of a run the store holds already, or None.
    file_of : callable
        ``file_of(name, doc, root) -> Path | None``: the file a resource document names.
    """

    def __init__(
        self,
        root: Path,
        spec_to_mimetype: Mapping[str, str],
        make_sink: Callable[[RunStart], LocalSink],
        kept: Callable[[str], Mapping[str, Any] | None],
        file_of: Callable[[str, Any, Path], Path | None],
    ) -> None:
        super().__init__(self._local_run)
        self.root = root.resolve()
        self.spec_to_mimetype = spec_to_mimetype
        self.make_sink = make_sink
        self.kept = kept
        self.file_of = file_of

    def _local_run(self, start: RunStart) -> LocalRun:
        require_provenance(start)
        return LocalRun(self, start)


class LocalRun:
    """One run into a store without tiled (see :class:`LocalPipeline`)."""

    def __init__(self, pipeline: LocalPipeline, start: RunStart) -> None:
        self.pipeline = pipeline
        self.uid = str(start["uid"])
        self.gate = RunGate(self.uid, pipeline.spec_to_mimetype)
        self._kept = pipeline.kept(self.uid)
        self._sink: LocalSink | None = None
        self._run: GatedRun | None = None
        self._discarded = False
        if self._kept is not None:  # a copy: nothing is written, its start and stop checked
            check_stored_copy(self.uid, "start", self._kept.get("start"), start)
            return
        self._sink = pipeline.make_sink(start)
        self._run = GatedRun(start, self._sink, self.gate)

    def __call__(self, name: str, doc: Document) -> None:
        if name == "start" or self._discarded:
            return
        if self._run is None:
            if name == "stop":
                assert self._kept is not None
                check_stored_copy(self.uid, "stop", self._kept.get("stop"), doc)
                self.gate.record(name, doc)
            return
        self._check_contained(name, doc)
        self._run(name, doc)

    def _check_contained(self, name: str, doc: Document) -> None:
        path = self.pipeline.file_of(name, doc, self.pipeline.root)
        if path is None:
            return
        root = self.pipeline.root
        if not path.resolve().is_relative_to(root):
            reason = (
                f"{document_id(name, doc)} names the file {str(path)!r:.300}, which is not "
                f"inside the store's root {str(root)!r}; write derived files under the "
                "store's root (store.root)"
            )
            self.gate.poison(reason)
            raise InvalidDocumentError(reason)

    def start_again(self, start: RunStart) -> None:
        raise InvalidDocumentError(f"{document_id('start', start)}: this run is already open")

    def discard(self) -> None:
        self._discarded = True
        if self._run is not None:
            self._run.discard()
        if self._sink is not None:
            self._sink.discard()
