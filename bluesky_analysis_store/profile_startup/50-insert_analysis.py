# ruff: noqa: F821  (an IPython startup file: names flow between files)
# mypy: ignore-errors
"""50-insert_analysis: analyze each scan as it finishes and save the derived run in the store.

``live`` runs ``normalize_and_bin`` on every successful raw run whose plan is one of
``BAS_LIVE_PLANS``, on a worker thread (``RE(...)`` returns as soon as the scan is done), and
saves the derived run with its provenance. ``live.wait()`` blocks until the queued analyses are
done; ``live.saved`` maps raw uid -> derived uid; ``live.failures`` lists the analyses that
failed (a failing analysis is logged and recorded, and never aborts a scan).

Environment:

``BAS_LIVE_PLANS``
    Plan names to analyze, separated by spaces (default: ``scan rel_scan``).
``BAS_LIVE_DETECTOR``
    The signal's data key (default ``det``).
``BAS_LIVE_MONITOR``
    A data key to divide the signal by (default: none).
``BAS_LIVE_X``
    The scanned axis' data key (default ``motor``).
``BAS_LIVE_BINS``
    Number of equal-width bins (default 10).
"""

import atexit
import os

from bluesky_analysis_store import LiveAnalysis, normalize_and_bin

live = LiveAnalysis(
    normalize_and_bin,
    store,
    parameters={
        "detector": os.environ.get("BAS_LIVE_DETECTOR") or "det",
        "monitor": os.environ.get("BAS_LIVE_MONITOR") or None,
        "x": os.environ.get("BAS_LIVE_X") or "motor",
        "bins": int(os.environ.get("BAS_LIVE_BINS") or 10),
    },
    plan_names=(os.environ.get("BAS_LIVE_PLANS") or "scan rel_scan").split(),
)
RE.subscribe(live)
atexit.register(live.close)  # finish the queued analyses before the store closes
