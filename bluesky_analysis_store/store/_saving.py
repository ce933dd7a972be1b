"""What a save does, the same for every store: :class:`SavingStore`.

A save checks and lays out the run (:func:`~..compose._compose.prepare_analysis_run`: values,
metadata, the provenance policy), takes the lineage's lock, asks the store whether the lineage
is already saved (the same content: its uid; other content: :class:`RunConflictError`), writes
the files, and sends every document through the store's :meth:`insert` (the document gate);
if a document is refused, what the save made is taken back. A failure record goes through the
same :meth:`insert`. The stores differ only in what answers "already saved?", what
:meth:`insert` keeps, and how a refused save is taken back.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Unpack

from ..core._errors import AnalysisStoreError, RunConflictError
from ..core._files import remove_empty_directories
from ._failures import failure_documents
from ._locks import lineage_lock

if TYPE_CHECKING:
    from ..compose._compose import ComposedRun, PreparedRun, RunOptions
    from ..core._documents import Document
    from ..pairs._pairs import PairRegistry
    from ..provenance._policy import ProvenancePolicy
    from ..provenance._provenance import Provenance

logger = logging.getLogger("bluesky_analysis_store.store")


def remove_files(files: Sequence[Path], root: Path) -> None:
    """Delete ``files`` and the directories under ``root`` they leave empty."""
    for path in files:
        path.unlink(missing_ok=True)
    remove_empty_directories({path.parent for path in files}, root)


class SavingStore(ABC):
    """``save`` and ``record_failure`` for every store (see the module's docstring).

    A store provides ``root``, ``read_only``, :meth:`insert`, :meth:`_lineage_contents` and
    :meth:`_take_back`, and sets ``_registry`` (its pairs, or None for every installed pair).
    """

    root: Path
    read_only: bool = False
    _registry: PairRegistry | None = None

    @property
    def registry(self) -> PairRegistry:
        """The writer/handler pairs files are written with (default: every installed pair,
        found when first asked for)."""
        if self._registry is None:
            from ..pairs._pairs import default_registry

            self._registry = default_registry()
        return self._registry

    @registry.setter
    def registry(self, registry: PairRegistry) -> None:
        self._registry = registry

    @abstractmethod
    def insert(self, name: str, doc: Document) -> None:
        """Take one document (through the document gate)."""

    @abstractmethod
    def _lineage_contents(self, lineage_hash: str) -> dict[str, str | None]:
        """``{uid: content_hash}`` of the complete runs of ``lineage_hash``."""

    @abstractmethod
    def _take_back(self, run: ComposedRun) -> None:
        """A save was refused halfway: remove what it made."""

    def _expect_new(self, uid: str) -> None:
        """``uid`` was just made (a new UUID4): no run can have it (by default, nothing to
        note)."""
        return None

    def _saved(self, run: ComposedRun) -> None:
        """Every document of ``run`` was taken (by default, nothing more to do)."""
        return None

    def save(
        self,
        data_dicts: Sequence[Mapping[str, Mapping[str, Any]]],
        md: Mapping[str, Any],
        *,
        provenance: Provenance | Mapping[str, Any] | None,
        new_version: bool = False,
        **options: Unpack[RunOptions],
    ) -> str:
        """Compose an analysis run (files + documents), insert it, and return its uid.

        Arguments are those of :func:`compose_analysis_run` (``writers``, ``policy``,
        ``packet``, ``asset_form``, ``uid``, ``event_pages``; events go in as event pages by
        default); files go under the store's root, with the store's pairs. If the run cannot be
        inserted at all, its files are removed again.

        Saving again what is already saved (the same lineage hash and the same content hash,
        in a complete run) returns the existing run's uid and writes nothing. The same lineage
        with different content (the analysis changed but kept its version, or the metadata
        differs) raises :class:`RunConflictError` and writes nothing, unless
        ``new_version=True``, which saves another run of the lineage. Processes and threads
        sharing the store's root take a lock per lineage, so concurrent saves of one lineage
        make exactly one run.
        """
        from ..compose._compose import prepare_analysis_run

        self._check_writable("save")
        options.setdefault("event_pages", True)
        prepared = prepare_analysis_run(
            data_dicts, md, root=self.root, registry=self.registry, provenance=provenance, **options
        )
        with lineage_lock(self.root, prepared.lineage_hash):
            if not new_version and (existing := self._saved_while_reachable(prepared)) is not None:
                prepared.done()
                return existing
            run = prepared.write()
            if options.get("uid") is None:  # a new UUID4: no run can have it
                self._expect_new(run.uid)
            try:
                for name, doc in run:
                    self.insert(name, doc)
            except Exception:
                self._take_back(run)
                raise
        self._saved(run)
        return run.uid

    def _saved_while_reachable(self, prepared: PreparedRun) -> str | None:
        """:meth:`_already_saved` (a store with a spool may not be able to tell)."""
        return self._already_saved(prepared)

    def _already_saved(self, prepared: PreparedRun) -> str | None:
        """The uid of a complete run holding exactly what ``prepared`` would save, or None;
        :class:`RunConflictError` if complete runs of its lineage hold something else."""
        return self._lineage_match(prepared.start)

    def _lineage_match(self, start: Mapping[str, Any]) -> str | None:
        """The uid of a complete run of ``start``'s lineage with its content hash, or None;
        :class:`RunConflictError` if complete runs of its lineage hold something else."""
        lineage_hash = str(start["lineage_hash"])
        contents = self._lineage_contents(lineage_hash)
        same = [uid for uid, content in contents.items() if content == start["content_hash"]]
        if same:
            logger.info(
                "run %s already holds lineage %s with the same content; not saved again",
                same[0],
                lineage_hash,
            )
            return same[0]
        others = list(contents)
        if others:
            raise RunConflictError(
                f"lineage {lineage_hash} (analysis {start['analysis_name']!r} version "
                f"{start['analysis_version']!r}, same parameters and parents) is already "
                f"saved as run(s) {', '.join(others[:3])}{' ...' if len(others) > 3 else ''} "
                "with different data or metadata (content_hash differs); nothing was written. "
                "If the analysis changed, give it a new version; to keep both results, save "
                "with new_version=True"
            )
        return None

    def _check_writable(self, action: str) -> None:
        if self.read_only:
            raise AnalysisStoreError(
                f"cannot {action}: this store was opened read-only (read_only=True); nothing "
                "was written"
            )

    def record_failure(
        self,
        provenance: Provenance | Mapping[str, Any],
        reason: str,
        *,
        md: Mapping[str, Any] | None = None,
        policy: ProvenancePolicy | None = None,
    ) -> str:
        """Record that an analysis failed on its parents: a run with no data whose stop
        document says ``exit_status="fail"`` and ``reason``. Returns its uid.

        The start document carries the provenance (so the same queries find it), which is how
        ``failed_analyses`` and ``missing_analysis`` answer "which runs lack their analysis,
        and why". Queries for results hide it.
        """
        documents = failure_documents(provenance, reason, md, policy)
        for name, doc in documents:
            self.insert(name, doc)
        return str(documents[0][1]["uid"])
