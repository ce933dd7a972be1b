"""What the code that saves into a store needs of it: the :class:`Store` protocol.

``LiveAnalysis``, the ``analyze`` plan (through ``store.root``, ``store.raw`` and
``RE.subscribe(store.insert)``) and reprocessing's workers use a store only through these
members, so that every store serves them unchanged: the tiled-backed :class:`AnalysisStore`
(embedded, served, PostgreSQL), the null store (``null:``: checks everything, keeps nothing)
and the JSONL directory store (``jsonl:DIR``: no tiled at all). The checks a save does are
not part of any one store: :class:`~bluesky_analysis_store.store._saving.SavingStore` runs
them for all.

It lives here, below both ``store`` and ``runengine`` in the layers (which may not import each
other), so that both, and reprocessing, can name it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, Unpack, runtime_checkable

if TYPE_CHECKING:
    from ..core._documents import Document, RunStart
    from ..pairs._pairs import PairRegistry
    from ..provenance._policy import ProvenancePolicy
    from ..provenance._provenance import Provenance
    from ._compose import RunOptions


@runtime_checkable
class Store(Protocol):
    """A store of analysis runs, as the code that saves into it and plans from it sees it.

    Attributes
    ----------
    root : Path
        Where derived files are written (the ``analyze`` plan's devices write there too).
    raw : catalog or None
        The raw runs analyses read (a tiled ``CatalogOfBlueskyRuns`` container), if known.
    registry : PairRegistry
        The writer/handler pairs files are written and read with.
    """

    root: Path
    raw: Any

    @property
    def registry(self) -> PairRegistry: ...

    def save(
        self,
        data_dicts: Sequence[Mapping[str, Mapping[str, Any]]],
        md: Mapping[str, Any],
        *,
        provenance: Provenance | Mapping[str, Any] | None,
        new_version: bool = False,
        **options: Unpack[RunOptions],
    ) -> str:
        """Check, compose and keep an analysis run; its uid."""

    def insert(self, name: str, doc: Document) -> None:
        """Take one document of an analysis run (a RunEngine subscriber)."""

    def record_failure(
        self,
        provenance: Provenance | Mapping[str, Any],
        reason: str,
        *,
        md: Mapping[str, Any] | None = None,
        policy: ProvenancePolicy | None = None,
    ) -> str:
        """Record that an analysis failed on its parents; the record's uid."""

    def with_lineage(self, lineage_hash: str, *, include_incomplete: bool = False) -> list[str]:
        """Uids of the complete runs with this lineage hash."""

    def derived_from(
        self, uid: str, *, recursive: bool = False, include_incomplete: bool = False
    ) -> list[str]:
        """Uids of the complete runs whose parents include ``uid``."""

    def of_sample(self, sample_uuid: str, *, include_incomplete: bool = False) -> list[str]:
        """Uids of the complete runs about one sample."""

    def failed_analyses(self, name: str | None = None) -> list[dict[str, Any]]:
        """The recorded analysis failures."""

    def start_document(self, uid: str) -> RunStart | None:
        """The start document of ``uid``, or None."""

    def analysis_starts(self, names: Iterable[str], exit_status: str) -> dict[str, RunStart]:
        """``{uid: start}`` of the runs of the analyses ``names`` that ended with
        ``exit_status`` (reprocessing plans a campaign from them)."""

    def find_run(self, uid: str) -> Any | None:
        """Run ``uid`` to read (a tiled ``BlueskyRun``), or None if it is not there."""

    def close(self) -> None: ...

    def __contains__(self, uid: object) -> bool: ...

    def __len__(self) -> int: ...

    def __iter__(self) -> Iterator[str]: ...
