# ruff: noqa: F821  (an IPython startup file: names flow between files)
# mypy: ignore-errors
"""90-plans: example plans that analyze through the RunEngine.

::

    RE(scan_and_analyze([det], motor, -1, 1, 11, bins=5))

scans, then analyzes the scan as a plan: the derived run's documents go through ``RE`` (every
subscriber sees them) into the analysis store, with provenance naming the scan. ``analyze`` does
the same for runs already in the raw catalog::

    RE(analyze(normalize_and_bin, [uid], catalog=store.raw, root=store.root, parameters={...}))

A scan whose plan the live analysis (50-insert_analysis.py) also takes gets both derived runs;
with the same parameters they would share a lineage hash (the same computation twice).
"""

from collections.abc import Callable, Generator, Sequence
from typing import Any

from bluesky_analysis_store import analyze


def _data_key(device: Any) -> str:
    """The data key a scan records for ``device`` (its first hinted field, else its name)."""
    fields = (getattr(device, "hints", None) or {}).get("fields") or [device.name]
    return str(fields[0])


def scan_and_analyze(
    detectors: Sequence[Any],
    motor: Any,
    start: float,
    stop: float,
    num: int,
    *,
    analysis: Callable[..., Any] = normalize_and_bin,
    md: dict[str, Any] | None = None,
    **parameters: Any,
) -> Generator[Any, Any, tuple[str, str]]:
    """Scan ``motor``, then analyze the scan into a derived run in the analysis store.

    Parameters
    ----------
    detectors : list of devices
        As for ``bp.scan``.
    motor : device
        The scanned axis.
    start, stop : float
        The scan's limits.
    num : int
        Number of points.
    analysis : callable
        ``analysis(run, **parameters) -> (data_dicts, md)`` (default: ``normalize_and_bin``,
        whose ``detector`` and ``x`` default to the first detector's and the motor's data keys).
    md : dict, optional
        Metadata of the scan.
    **parameters
        The analysis' parameters, recorded in its provenance.

    Returns
    -------
    raw_uid, derived_uid : str
        The plan's return value (``RE(...)`` returns the uids of both runs).
    """
    raw_uid = yield from bp.scan(detectors, motor, start, stop, num, md=md)
    if analysis is normalize_and_bin:
        parameters.setdefault("detector", _data_key(detectors[0]))
        parameters.setdefault("x", _data_key(motor))
    derived_uid = yield from analyze(
        analysis,
        [raw_uid],
        catalog=store.raw,
        root=store.root,
        parameters=parameters,
        registry=store.registry,
        packet=packet,
    )
    return raw_uid, derived_uid
