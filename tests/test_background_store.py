"""``BackgroundStore``: a store opened in a background thread, as the beamline profile opens it."""

from __future__ import annotations

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
