"""The null store (``AnalysisStore.open("null:")``): checks everything a save checks, keeps
nothing (AFL's "trashcan" store, with every check of a real one).

A save runs the same code as a tiled store's (:class:`~._saving.SavingStore`): the values and
metadata are checked and laid out, the provenance policy enforced, the files *written* (into a
temporary root of the store's own) and every document sent through the same pipeline checks
and document gate (:class:`~..insert._local.LocalPipeline`); then the run's files are removed.
Writing the files, rather than only checking the values, is what proves a writer can write
them (an HDF5 dtype, a TIFF shape, a full disk): a rehearsal that skipped it would pass what
a real save refuses. The temporary root is removed when the store is closed; nothing is left.

Lookups answer empty; reading a run raises :class:`~..core._errors.NothingKeptError`.
``null:SOURCE`` reads its raw catalog (``raw=``) from the store at ``SOURCE`` (a directory or
URI), opened read-only: a campaign can be rehearsed over real raw runs.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core._errors import NothingKeptError
from ..core._files import ClosingContext
from ..core._paths import NULL_STORE
from ._locations import document_file
from ._saving import SavingStore, remove_files

if TYPE_CHECKING:
    from ..compose._compose import ComposedRun
    from ..core._documents import Document, RunStart
    from ..insert._local import LocalPipeline
    from ..pairs._pairs import PairRegistry


class _Nowhere:
    """A run's sink that keeps nothing; at the stop its files (``ROOT/UID``, where a device of
    the ``analyze`` plan wrote them) are removed."""

    def __init__(self, root: Path, uid: str) -> None:
        self.directory = root / uid

    def __call__(self, name: str, doc: Document) -> None:
        if name == "stop":
            self.discard()

    def discard(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


class NullStore(SavingStore, ClosingContext):
    """A store that checks every save and keeps nothing (build it with
    ``AnalysisStore.open("null:")``).

    Parameters
    ----------
    registry : PairRegistry, optional
        Writer/handler pairs (default: every installed pair).
    raw : catalog, optional
        The raw runs analyses read (a tiled container), e.g. another store's ``raw``.
    context : object with ``close()``, optional
        Closed with the store (the source store ``raw`` came from).
    """

    read_only = False

    def __init__(
        self, *, registry: PairRegistry | None = None, raw: Any = None, context: Any = None
    ) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="bas-null-")).resolve()
        self.raw = raw
        self._registry = registry
        self._context = context
        self._lock = threading.Lock()
        self._pipeline: LocalPipeline | None = None
        self.spool = None

    def __repr__(self) -> str:
        return f"NullStore(raw={self.raw is not None})"

    @property
    def target(self) -> str:
        return NULL_STORE

    @property
    def _inserter(self) -> LocalPipeline:
        if self._pipeline is None:
            from ..insert._local import LocalPipeline

            self._pipeline = LocalPipeline(
                self.root,
                self.registry.spec_to_mimetype(),
                lambda start: _Nowhere(self.root, str(start["uid"])),
                lambda uid: None,  # nothing is kept: every run is new
                document_file,
            )
        return self._pipeline

    # --- saving (SavingStore's, with nothing kept) ----------------------------------------

    def insert(self, name: str, doc: Document) -> None:
        """Check one document as a real store's insert does; keep nothing."""
        with self._lock:
            self._inserter(name, doc)

    def _lineage_contents(self, lineage_hash: str) -> dict[str, str | None]:
        return {}

    def _take_back(self, run: ComposedRun) -> None:
        self._inserter.discard(run.uid)
        remove_files(run.files, self.root)

    def _saved(self, run: ComposedRun) -> None:
        remove_files(run.files, self.root)

    # --- lookups: nothing kept -------------------------------------------------------------

    def with_lineage(self, lineage_hash: str, *, include_incomplete: bool = False) -> list[str]:
        return []

    def derived_from(
        self, uid: str, *, recursive: bool = False, include_incomplete: bool = False
    ) -> list[str]:
        return []

    def of_sample(self, sample_uuid: str, *, include_incomplete: bool = False) -> list[str]:
        return []

    def failed_analyses(self, name: str | None = None) -> list[dict[str, Any]]:
        return []

    def analysis_starts(self, names: Iterable[str], exit_status: str) -> dict[str, RunStart]:
        return {}

    def start_document(self, uid: str) -> RunStart | None:
        """The start document of a raw run (the null store keeps no other), or None."""
        from ._store import _start_in

        return _start_in(self.raw, uid)

    def find_run(self, uid: str) -> Any | None:
        """Raises :class:`NothingKeptError`: a null store keeps no run to read back."""
        raise NothingKeptError(
            f"run {uid!r} cannot be read: a null store (null:) checks every save and keeps "
            "nothing; save into a real store to read runs back"
        )

    __getitem__ = find_run

    def __contains__(self, uid: object) -> bool:
        return False

    def __len__(self) -> int:
        return 0

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def close(self) -> None:
        """Give up the runs still open, remove the temporary root (and close the raw
        catalog's source)."""
        if self._pipeline is not None:
            for chain in self._pipeline.open_runs():
                self._pipeline.discard(chain.gate.uid)
        shutil.rmtree(self.root, ignore_errors=True)
        if self._context is not None:
            self._context.close()
            self._context = None
