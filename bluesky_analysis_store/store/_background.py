"""A store opened in a background thread, usable at once: what needs it waits for it.

The IPython beamline profile opens its store this way, so that the prompt comes before the
store has been reached (a local server started, tiled's and bluesky-tiled-plugins' clients
imported). The first scan, a save or any attribute of the store waits until it is open; an error
while opening is printed at once (not only at the first scan) and raised by whatever waits.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..core._errors import AnalysisStoreError

if TYPE_CHECKING:
    from ..core._documents import Document
    from ._store import AnalysisStore


class BackgroundStore:
    """An :class:`AnalysisStore` being opened by ``open_store()`` in a background thread.

    Attributes and methods are the store's, each waiting until it is open (:meth:`wait`).
    :meth:`insert` waits when called, not when it is looked up, so ``RE.subscribe(
    analysis_runs_only(store.insert))`` does not wait.

    Parameters
    ----------
    open_store : callable
        Opens and returns the store (e.g. ``lambda: AnalysisStore.open(...)``); it runs once,
        in a daemon thread, and may do more work there (e.g. import what the first scan needs).
    describe : str
        What is opened, for messages.
    """

    def __init__(self, open_store: Callable[[], AnalysisStore], describe: str) -> None:
        self._describe = describe
        self._opened = threading.Event()
        self._store: AnalysisStore | None = None
        self._error: BaseException | None = None
        self._closed = False
        threading.Thread(
            target=self._open, args=(open_store,), name="bas-open-store", daemon=True
        ).start()

    def _open(self, open_store: Callable[[], AnalysisStore]) -> None:
        try:
            self._store = _opened(open_store)
        except BaseException as error:
            self._error = error
            # at once, where the user looks: the prompt may already be there
            print(
                f"bluesky-analysis-store: could not open {self._describe}: "
                f"{type(error).__name__}: {error}",
                file=sys.stderr,
                flush=True,
            )
        finally:
            self._opened.set()

    def wait(self, timeout: float | None = None) -> AnalysisStore:
        """The store, once open.

        Raises
        ------
        AnalysisStoreError
            If opening failed (chained to its error) or took longer than ``timeout``.
        """
        if not self._opened.wait(timeout):
            raise AnalysisStoreError(f"{self._describe} is still being opened after {timeout} s")
        if self._store is None:
            raise AnalysisStoreError(
                f"{self._describe} could not be opened: {type(self._error).__name__}: {self._error}"
            ) from self._error
        return self._store

    @property
    def is_open(self) -> bool:
        """Has it been opened (successfully)?"""
        return self._opened.is_set() and self._store is not None

    def insert(self, name: str, doc: Document) -> None:
        """:meth:`AnalysisStore.insert`, once the store is open."""
        self.wait().insert(name, doc)

    def close(self) -> None:
        """Close the store (once it is open; nothing if it could not be opened)."""
        self._opened.wait()
        if self._store is not None and not self._closed:
            self._closed = True
            self._store.close()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):  # private, copy, pickle and the like: not the store's
            raise AttributeError(name)
        return getattr(self.wait(), name)

    def __getitem__(self, key: Any) -> Any:
        return self.wait()[key]

    def __contains__(self, uid: object) -> bool:
        return uid in self.wait()

    def __len__(self) -> int:
        return len(self.wait())

    def __iter__(self) -> Any:
        return iter(self.wait())

    def __enter__(self) -> BackgroundStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        if self.is_open:
            return repr(self._store)
        state = "failed to open" if self._opened.is_set() else "opening"
        return f"<{self._describe}: {state}>"


def _opened(open_store: Callable[[], AnalysisStore]) -> AnalysisStore:
    """``open_store()``, once more if an import failed although the module is there.

    IPython runs each startup file with its directory put in front of ``sys.path`` and taken
    out again afterwards, while this thread imports (tiled, bluesky-tiled-plugins, ...). An
    import walks the live ``sys.path`` list: an entry removed before the one it is at shifts
    the rest, and it skips one, perhaps site-packages, raising ``ModuleNotFoundError`` for an
    installed package. A failed import leaves no module behind, so importing again is safe.
    """
    import importlib.util

    try:
        return open_store()
    except ModuleNotFoundError as error:
        try:
            there = error.name is not None and importlib.util.find_spec(error.name) is not None
        except ImportError:  # its parent package is missing too
            there = False
        if not there:
            raise
        return open_store()
