"""``BackgroundStore``: a store opened in a background thread, as the beamline profile opens it."""

from __future__ import annotations

import sys
import threading

import numpy as np
import pytest
from helpers import make_provenance

from bluesky_analysis_store import AnalysisStore, AnalysisStoreError, BackgroundStore


def test_usable_at_once_and_what_needs_the_store_waits_for_it(tmp_path):
    go = threading.Event()
    opened: list[AnalysisStore] = []

    def open_store() -> AnalysisStore:
        go.wait()  # the store is not reached until the test says so
        opened.append(AnalysisStore.open(tmp_path / "store", local_server=False))
        return opened[0]

    store = BackgroundStore(open_store, "the test store")
    assert not store.is_open  # constructed before anything was opened
    assert repr(store) == "<the test store: opening>"
    insert = store.insert  # looking the method up does not wait
    with pytest.raises(AnalysisStoreError, match=r"still being opened after 0\.05 s"):
        store.wait(timeout=0.05)
    results: list[str] = []
    saver = threading.Thread(
        target=lambda: results.append(
            store.save([{"s": {"x": np.arange(3.0)}}], {}, provenance=make_provenance())
        )
    )
    saver.start()  # waits for the store
    go.set()
    saver.join(timeout=120)
    assert store.is_open
    assert store.wait() is opened[0]
    (uid,) = results
    assert uid in store
    assert list(store) == [uid]
    assert len(store) == 1
    assert store[uid].metadata["start"]["uid"] == uid
    assert callable(insert)
    store.close()
    store.close()  # once


def test_an_error_while_opening_is_shown_at_once_and_raised_by_what_waits(tmp_path, capsys):
    blocker = tmp_path / "a file"
    blocker.write_text("not a directory")
    store = BackgroundStore(
        lambda: AnalysisStore.open(blocker / "store", local_server=False), "the test store"
    )
    with pytest.raises(AnalysisStoreError, match="the test store could not be opened") as raised:
        store.wait(timeout=120)
    assert raised.value.__cause__ is not None
    err = capsys.readouterr().err
    assert err.startswith("bluesky-analysis-store: could not open the test store: ")
    with pytest.raises(AnalysisStoreError, match="could not be opened"):
        store.insert("start", {})
    assert repr(store) == "<the test store: failed to open>"
    store.close()  # nothing to close


def test_an_import_that_missed_an_installed_module_is_tried_again(tmp_path, monkeypatch):
    """IPython takes each startup file's directory out of ``sys.path`` while the store opens in
    this thread: an import walking ``sys.path`` then may skip site-packages and miss an
    installed package. The opening is tried once more when the module is there by then, and
    not when it is not."""
    (tmp_path / "bas_found_late.py").write_text("VALUE = 7\n")
    monkeypatch.setattr(sys, "path", list(sys.path))  # restored, with what this test adds
    monkeypatch.delitem(sys.modules, "bas_found_late", raising=False)
    calls = []

    def open_store():
        calls.append("open")
        try:
            import bas_found_late  # not on sys.path the first time
        finally:
            sys.path.append(str(tmp_path))  # and there by the time the error is looked at
        return bas_found_late.VALUE

    assert BackgroundStore(open_store, "the test store").wait(timeout=60) == 7
    assert calls == ["open", "open"]
    sys.modules.pop("bas_found_late", None)

    calls.clear()

    def open_missing():
        calls.append("open")
        import bas_nowhere_at_all  # noqa: F401

    store = BackgroundStore(open_missing, "the other test store")
    with pytest.raises(AnalysisStoreError, match="No module named 'bas_nowhere_at_all'"):
        store.wait(timeout=60)
    assert calls == ["open"]
