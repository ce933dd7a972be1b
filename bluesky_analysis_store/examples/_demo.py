"""The main job (``bas demo``): compose a realistic analysis run in the embedded default store."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd

from ..core._errors import AnalysisStoreError
from ..provenance._samples import MetadataPacket
from ..runengine._live import LiveAnalysis
from ..runengine._plans import analyze
from ..runengine._routing import analysis_runs_only, raw_runs_only
from ..store._store import AnalysisStore


def example_data_dicts(points: int = 20, seed: int = 0) -> list[dict[str, dict[str, Any]]]:
    """DBEP 6 ``data_dicts`` of a small XAS-like reduction, as an analysis would return them.

    Three streams: ``primary`` (per point: a 64×64 detector ROI image, its total, the
    absorption ``mu``), ``spectra`` (one interpolated spectrum as a DataFrame, the ISS
    prototype's use case) and ``fit`` (an edge fit's scalars and a label).
    """
    rng = np.random.default_rng(seed)
    energy = np.linspace(8950.0, 9050.0, points)
    edge = 1.0 / (1.0 + np.exp(-(energy - 8979.0) / 3.0))
    y, x = np.mgrid[0:64, 0:64]
    data_dicts: list[dict[str, dict[str, Any]]] = []
    for i in range(points):
        spot = np.exp(-((x - 32 - i / 4) ** 2 + (y - 30) ** 2) / 40.0)
        image = (1000 * edge[i] * spot + rng.normal(0, 1, spot.shape)).astype(np.float32)
        i0 = 1e5 * (1 + 0.01 * rng.normal())
        mu = float(np.log(i0 / (i0 * np.exp(-edge[i]) + 1.0)))
        data_dicts.append(
            {"primary": {"roi_image": image, "roi_total": float(image.sum()), "mu": mu}}
        )
    grid = np.linspace(8960.0, 9040.0, 161)
    mu_grid = np.interp(grid, energy, [d["primary"]["mu"] for d in data_dicts])
    spectrum = pd.DataFrame(
        {"mu": mu_grid, "mu_norm": mu_grid / mu_grid.max()},
        index=pd.Index(grid, name="energy"),
    )
    data_dicts[-1]["spectra"] = {"interpolated": spectrum}
    data_dicts[-1]["fit"] = {"e0": 8979.0 + rng.normal(0, 0.1), "width": 3.0, "model": "logistic"}
    return data_dicts


def fit_peak(raw_run: Any) -> tuple[list[dict[str, dict[str, Any]]], dict[str, Any]]:
    """First analysis, live on each scan: normalize the detector profile and fit its peak
    (moments)."""
    table = raw_run["primary"].read()
    x = np.asarray(table["motor"], dtype=float)
    y = np.asarray(table["det"], dtype=float)
    weights = y - y.min()
    center = float((weights * x).sum() / weights.sum())
    sigma = float(np.sqrt((weights * (x - center) ** 2).sum() / weights.sum()))
    data_dicts: list[dict[str, dict[str, Any]]] = [
        {
            "profile": {"normalized": y / y.max(), "positions": x},
            "fit": {"center": center, "sigma": sigma, "amplitude": float(y.max())},
        }
    ]
    return data_dicts, {"method": "moments"}


fit_peak.version = "1.0"  # type: ignore[attr-defined]


def compare_peaks(*fit_runs: Any) -> tuple[list[dict[str, dict[str, Any]]], dict[str, Any]]:
    """Second analysis, a plan reading the first one's runs: each peak's shift from the mean."""
    centers = [float(run["fit"].read()["center"][0]) for run in fit_runs]
    mean = float(np.mean(centers))
    data_dicts: list[dict[str, dict[str, Any]]] = [
        {"shifts": {"center": c, "shift": c - mean}} for c in centers
    ]
    data_dicts[0]["summary"] = {"mean_center": mean, "spread": float(np.ptp(centers))}
    return data_dicts, {"reference": "mean"}


compare_peaks.version = "1.0"  # type: ignore[attr-defined]


@dataclass
class DemoResult:
    """What the demo made, for the summary and for tests."""

    directory: Path
    store: AnalysisStore
    raw_uids: list[str]
    fit_uids: list[str]
    comparison_uid: str
    picture: Path


def run_demo(directory: Path | None = None, say: Callable[[str], None] = print) -> DemoResult:
    """A small beamline session on the embedded default store, with two chained analyses.

    A real RunEngine scans ophyd.sim devices into a raw catalog while ``fit_peak`` is
    subscribed as a :class:`LiveAnalysis` (the callback path); then the plan
    :func:`analyze` runs ``compare_peaks`` on those results through the same RunEngine (the
    plan path). All runs are saved with provenance.
    """
    if directory is None:
        directory = Path.cwd() / time.strftime("bas-demo-%Y%m%d-%H%M%S")
    directory = directory.resolve()
    directory.mkdir(parents=True, exist_ok=True)
    # ophyd.sim makes a temporary directory at import: keep it inside the demo directory
    (directory / "tmp").mkdir(exist_ok=True)
    tempfile.tempdir = str(directory / "tmp")

    say(f"opening the embedded store in {directory / 'store'} ...")
    store = AnalysisStore.open(directory / "store", raw="raw")
    try:
        return _session(directory, store, say)
    except BaseException:
        store.close()  # else its in-process server's thread keeps the process from exiting
        raise


def _session(directory: Path, store: AnalysisStore, say: Callable[[str], None]) -> DemoResult:
    from bluesky import RunEngine
    from bluesky_tiled_plugins.writing.tiled_writer import TiledWriter

    engine = RunEngine({})
    engine.subscribe(raw_runs_only(TiledWriter(store.raw)))
    engine.subscribe(analysis_runs_only(store.insert))
    live = LiveAnalysis(fit_peak, store, plan_names=["scan"])
    engine.subscribe(live)
    try:
        return _scans_and_analyses(directory, store, engine, live, say)
    finally:
        live.close()


def _scans_and_analyses(
    directory: Path,
    store: AnalysisStore,
    engine: Any,
    live: LiveAnalysis,
    say: Callable[[str], None],
) -> DemoResult:
    from bluesky.plans import scan
    from ophyd.sim import det, motor
    from tqdm import tqdm

    packet = MetadataPacket(profile="bas-demo")
    raw_uids: list[str] = []
    for center in tqdm((-0.5, 0.0, 0.7), desc="raw scans", unit="scan", disable=None):
        det.center.put(center)
        packet.set_sample(f"crystal at {center:+.1f}", sample_composition="Si")
        result = engine(scan([det], motor, -3, 3, 31), sample_name=packet["sample_name"])
        (uid,) = cast(tuple[str, ...], result)
        raw_uids.append(uid)
    say(f"scanned {len(raw_uids)} raw runs with ophyd.sim into the raw catalog")
    live.wait()
    if live.failures:
        raise AnalysisStoreError(f"fit_peak failed: {live.failures[0].error}")
    fit_uids = [live.saved[uid] for uid in raw_uids]
    say(f"LiveAnalysis saved {len(fit_uids)} fit_peak runs as the scans finished")

    (comparison_uid,) = cast(
        tuple[str, ...],
        engine(analyze(compare_peaks, fit_uids, catalog=store.runs, root=store.root)),
    )
    say("the analyze plan saved 1 compare_peaks run (which reads them) through the RunEngine")
    picture = store.lineage(comparison_uid).write_svg(directory / "lineage.svg")
    return DemoResult(directory, store, raw_uids, fit_uids, comparison_uid, picture)


def summarize(result: DemoResult) -> str:
    """What a user checks after a session: derived runs, an array, the lineage, the picture."""
    store, raw_uid = result.store, result.raw_uids[0]
    derived = store.derived_from(raw_uid, recursive=True)
    fit = store[result.fit_uids[0]]
    normalized = fit["profile"]["normalized"][0]
    lines = [
        f"derived runs of raw run {raw_uid[:8]}: "
        + ", ".join(f"{u[:8]} ({store[u].metadata['start']['analysis_name']})" for u in derived),
        f"fit_peak {result.fit_uids[0][:8]} profile/normalized[0][12:19] read back through tiled: "
        + np.array2string(normalized[12:19], precision=3),
        f"lineage of compare_peaks run {result.comparison_uid[:8]}:",
        store.lineage(result.comparison_uid).as_text(),
        f"lineage picture: {result.picture}",
        f"store: {result.directory / 'store'} (reopen with AnalysisStore.open(that path), or "
        f"`bas show UID --store {result.directory / 'store'}`; its local server stops once "
        "idle, or at `bas stop-server --store` that path)",
    ]
    return "\n".join(lines)
