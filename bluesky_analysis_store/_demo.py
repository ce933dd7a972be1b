"""The main job (``bas demo``): compose a realistic analysis run on the embedded default root."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ._capture import capture_provenance
from ._compose import ComposedRun, compose_analysis_run
from ._samples import MetadataPacket


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


def run_demo(directory: Path | None = None) -> tuple[ComposedRun, Path]:
    """Compose the example run under ``directory`` (default: a new ``bas-demo-*`` directory).

    Returns the composed run and the directory its files were written under.
    """
    if directory is None:
        directory = Path.cwd() / time.strftime("bas-demo-%Y%m%d-%H%M%S")
    directory = directory.resolve()
    directory.mkdir(parents=True, exist_ok=True)
    # The "raw data" the reduction reads: a file whose checksum the provenance records.
    raw = directory / "raw_scan.csv"
    energy = np.linspace(8950.0, 9050.0, 20)
    raw.write_text("energy\n" + "\n".join(f"{e:.3f}" for e in energy) + "\n")
    packet = MetadataPacket(profile="bas-demo")
    packet.set_sample("Cu foil", sample_composition="Cu")
    provenance = capture_provenance(
        example_data_dicts,
        name="xas_reduction",
        inputs=[raw],
        parameters={"points": 20, "grid": [8960.0, 9040.0, 161]},
    )
    run = compose_analysis_run(
        example_data_dicts(),
        {"beamline": "demo"},
        root=directory,
        writers={"roi_image": "BAS_HDF5", "interpolated": "BAS_TABLE_HDF5"},
        provenance=provenance,
        packet=packet,
    )
    return run, directory


def summarize(run: ComposedRun, directory: Path) -> str:
    """A few lines a person reads to check the run."""
    counts = Counter(name for name, _ in run.documents)
    streams = {
        doc["name"]: sorted(doc["data_keys"]) for name, doc in run.documents if name == "descriptor"
    }
    start = run.documents[0][1]
    code = start["provenance"]["code"]
    commit = (
        f" @ {code['commit'][:12]}{' (dirty)' if code['dirty'] else ''}" if code["commit"] else ""
    )
    lines = [
        f"analysis run {run.uid}",
        f"  root:      {directory}",
        f"  analysis:  {start['analysis_name']} {start['analysis_version']}{commit}",
        f"  lineage:   {start['lineage_hash']}",
        f"  sample:    {start['sample_name']} ({start['sample_uuid']})",
        "  inputs:    "
        + ", ".join(
            f"{i['path']} sha256 {i['sha256'][:12]}…" for i in start["provenance"]["inputs"]
        ),
        "  documents: " + ", ".join(f"{n} {name}" for name, n in counts.items()),
        "  (every document passed event_model.schema_validators)",
    ]
    lines += [f"  stream {name!r}: {', '.join(keys)}" for name, keys in streams.items()]
    lines += [f"  file: {path.relative_to(directory)}" for path in run.files]
    return "\n".join(lines)
