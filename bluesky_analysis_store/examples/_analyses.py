"""Two realistic analyses showing the patterns :class:`LiveAnalysis` and :func:`analyze` accept.

* :func:`normalize_and_bin` — a plain function with ``name`` and ``version`` attributes that
  reads the whole raw run when it stops.
* :class:`ImageProfilePeak` — a small class with a name, a version and parameters that
  streams: it reduces each image as its event arrives, so it never holds the image stack.
* :func:`average_curves` — a group analysis (``bas reprocess`` ``per: sample``): the mean of
  several ``normalize_and_bin`` results.

Each declares its parameters as a pydantic model (``parameters_model``), so a procedure file
(``bas reprocess``) or ``LiveAnalysis`` with a wrong parameter is refused before anything runs.
All three are published in the ``bluesky_analysis_store.analyses`` entry point group.

Both take a run (a tiled ``BlueskyRun`` or a live :class:`CollectedRun`) and return DBEP 6
``(data_dicts, md)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ..core._errors import AnalysisInputError

DataDicts = list[dict[str, dict[str, Any]]]


def _column(table: Any, run: Any, stream: str, key: str) -> np.ndarray:
    """Column ``key`` of ``table``, the stream read once (not once per column)."""
    if key not in table:
        raise AnalysisInputError(
            f"stream {stream!r} of run {run.metadata['start']['uid']} has no data key {key!r}; "
            f"it has {sorted(table.data_vars)}"
        )
    return np.asarray(table[key], dtype=float)


def normalize_and_bin(
    run: Any,
    *,
    detector: str = "det",
    monitor: str | None = None,
    x: str = "motor",
    bins: int = 10,
    stream: str = "primary",
) -> tuple[DataDicts, dict[str, Any]]:
    """Normalize a detector by a monitor and average it in equal-width bins of ``x``.

    Parameters
    ----------
    run : run
        Anything with ``run[stream].read()`` giving the columns (tiled or collected).
    detector, monitor, x : str
        Data keys: the signal, what it is divided by (``None``: not normalized), the abscissa.
    bins : int
        Number of equal-width bins between the smallest and largest ``x``; empty bins are left
        out.

    Returns
    -------
    data_dicts, md
        Stream ``binned``, one event per non-empty bin: ``x`` (bin center), ``mean``,
        ``std_error`` and ``count``; md names the keys used.
    """
    if not isinstance(bins, int) or bins < 1:
        raise AnalysisInputError(f"bins must be a positive integer; got {bins!r}")
    table = run[stream].read()  # once: every column it needs comes from this one read
    positions = _column(table, run, stream, x)
    signal = _column(table, run, stream, detector)
    if monitor is not None:
        norm = _column(table, run, stream, monitor)
        if np.any(norm == 0):
            raise AnalysisInputError(
                f"monitor {monitor!r} reads 0 at {int(np.sum(norm == 0))} points; cannot normalize"
            )
        signal = signal / norm
    edges = np.linspace(positions.min(), positions.max(), bins + 1)
    which = np.clip(np.digitize(positions, edges) - 1, 0, bins - 1)
    data_dicts: DataDicts = []
    for b in range(bins):
        values = signal[which == b]
        if values.size == 0:
            continue
        error = float(values.std(ddof=1) / np.sqrt(values.size)) if values.size > 1 else 0.0
        data_dicts.append(
            {
                "binned": {
                    "x": float((edges[b] + edges[b + 1]) / 2),
                    "mean": float(values.mean()),
                    "std_error": error,
                    "count": int(values.size),
                }
            }
        )
    md = {"detector": detector, "monitor": monitor, "x": x, "source_stream": stream}
    return data_dicts, md


class NormalizeAndBinParameters(BaseModel):
    """The parameters of :func:`normalize_and_bin`."""

    model_config = ConfigDict(extra="forbid")
    detector: str = "det"
    monitor: str | None = None
    x: str = "motor"
    bins: int = Field(10, ge=1)
    stream: str = "primary"


normalize_and_bin.name = "normalize_and_bin"  # type: ignore[attr-defined]
normalize_and_bin.version = "1.0"  # type: ignore[attr-defined]
normalize_and_bin.parameters_model = NormalizeAndBinParameters  # type: ignore[attr-defined]


class AverageCurvesParameters(BaseModel):
    """The parameters of :func:`average_curves`."""

    model_config = ConfigDict(extra="forbid")
    stream: str = "binned"
    x: str = "x"
    y: str = "mean"
    points: int = Field(50, ge=2)


def average_curves(
    runs: Any, *, stream: str = "binned", x: str = "x", y: str = "mean", points: int = 50
) -> tuple[DataDicts, dict[str, Any]]:
    """The mean of several curves (e.g. :func:`normalize_and_bin` results of one sample) on a
    common grid.

    Parameters
    ----------
    runs : list of runs
        Each with ``run[stream].read()`` giving columns ``x`` and ``y``.
    stream, x, y : str
        Where the curves are.
    points : int
        Grid points between the largest first and the smallest last ``x`` of the curves (where
        they all have data).

    Returns
    -------
    data_dicts, md
        Stream ``averaged``, one event per grid point: ``x``, ``mean``, ``spread`` (standard
        deviation of the curves there) and ``curves`` (how many); md says how many runs.
    """
    runs = list(runs) if isinstance(runs, list | tuple) else [runs]
    curves = []
    for run in runs:
        table = run[stream].read()
        curves.append((_column(table, run, stream, x), _column(table, run, stream, y)))
    low = max(float(c[0].min()) for c in curves)
    high = min(float(c[0].max()) for c in curves)
    if not low < high:
        raise AnalysisInputError(
            f"the {len(curves)} curves share no range of {x!r} (from {low} to {high})"
        )
    grid = np.linspace(low, high, points)
    values = np.array([np.interp(grid, np.sort(cx), cy[np.argsort(cx)]) for cx, cy in curves])
    data_dicts: DataDicts = [
        {
            "averaged": {
                "x": float(g),
                "mean": float(values[:, i].mean()),
                "spread": float(values[:, i].std()),
                "curves": len(curves),
            }
        }
        for i, g in enumerate(grid)
    ]
    return data_dicts, {"runs_averaged": len(runs), "source_stream": stream}


average_curves.name = "average_curves"  # type: ignore[attr-defined]
average_curves.version = "1.0"  # type: ignore[attr-defined]
average_curves.parameters_model = AverageCurvesParameters  # type: ignore[attr-defined]


def gaussian_fit(x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Fit a Gaussian to a peak: least squares of ``log y`` against a parabola (Caruana's
    method) over the points above half the maximum, after subtracting the baseline."""
    y = y - np.min(y)
    peak = float(y.max())
    top = y > peak / 2
    if peak <= 0 or top.sum() < 3:
        raise AnalysisInputError(
            f"no peak to fit: {int(top.sum())} points above half maximum (need at least 3)"
        )
    c2, c1, c0 = np.polyfit(x[top], np.log(y[top]), 2, w=np.sqrt(y[top]))
    if c2 >= 0:
        raise AnalysisInputError("no peak to fit: the profile is not peaked (log curvature >= 0)")
    center = -c1 / (2 * c2)
    sigma = np.sqrt(-1 / (2 * c2))
    amplitude = np.exp(c0 - c1**2 / (4 * c2))
    return {"center": float(center), "sigma": float(sigma), "amplitude": float(amplitude)}


class ImageProfilePeakParameters(BaseModel):
    """The parameters of :class:`ImageProfilePeak`."""

    model_config = ConfigDict(extra="forbid")
    image: str = "cam"
    x: str = "motor"
    axis: Literal[0, 1] = 0
    stream: str = "primary"


class ImageProfilePeak:
    """Reduce an image stack to 1-D profiles and fit the peak of each, streaming.

    Each image is summed along ``axis`` when its event arrives (:meth:`event`), so a long scan
    of big images costs one profile per point in memory. When the run stops (:meth:`__call__`)
    every profile gets a Gaussian fit, and the point with the strongest peak is summarized.

    Parameters
    ----------
    image : str
        Data key of the 2-D detector image.
    x : str
        Data key of the scanned position.
    axis : int
        Image axis summed away (0: a profile along the image's columns).
    stream : str
        Stream holding the images.
    """

    name = "image_profile_peak"
    version = "1.0"
    parameters_model = ImageProfilePeakParameters

    def __init__(
        self, image: str = "cam", x: str = "motor", axis: int = 0, stream: str = "primary"
    ) -> None:
        if axis not in (0, 1):
            raise AnalysisInputError(f"axis must be 0 or 1 (a 2-D image); got {axis!r}")
        self.image, self.x, self.axis, self.stream = image, x, axis, stream
        self._profiles: list[np.ndarray] = []
        self._positions: list[float] = []

    @property
    def parameters(self) -> dict[str, Any]:
        """What the analysis was configured with (recorded in the provenance)."""
        return {"image": self.image, "x": self.x, "axis": self.axis, "stream": self.stream}

    def begin(self, start: Mapping[str, Any]) -> None:
        """A new run: forget the previous one."""
        self._profiles, self._positions = [], []

    def event(self, stream: str, data: Mapping[str, Any]) -> None:
        """Reduce one image as it arrives."""
        if stream != self.stream:
            return
        key = self.image
        if key not in data:
            raise AnalysisInputError(f"event has no image {key!r}; data keys: {sorted(data)}")
        image = np.asarray(data[key], dtype=float)
        if image.ndim != 2:
            raise AnalysisInputError(f"{key!r} has shape {image.shape}; expected a 2-D image")
        self._profiles.append(image.sum(axis=self.axis))
        self._positions.append(float(data[self.x]))

    def __call__(self, run: Any, **parameters: Any) -> tuple[DataDicts, dict[str, Any]]:
        """The derived run: per point ``profiles`` (profile, fitted center/sigma/amplitude),
        and a ``summary`` of the strongest peak."""
        if parameters and parameters != self.parameters:
            raise AnalysisInputError(
                f"{self.name} is configured at construction ({self.parameters}); got {parameters}"
            )
        if not self._profiles:  # not streamed (e.g. given a stored run): reduce it now
            self.begin(run.metadata["start"])
            table = run[self.stream].read()
            for i in range(table.sizes["time"]):
                self.event(self.stream, {key: np.asarray(table[key][i]) for key in table.data_vars})
        pixels = np.arange(self._profiles[0].size, dtype=float)
        data_dicts: DataDicts = []
        for position, profile in zip(self._positions, self._profiles, strict=True):
            fit = gaussian_fit(pixels, profile)
            data_dicts.append(
                {
                    "profiles": {
                        "position": position,
                        "profile": profile,
                        "peak_center": fit["center"],
                        "peak_sigma": fit["sigma"],
                        "peak_amplitude": fit["amplitude"],
                    }
                }
            )
        best = max(data_dicts, key=lambda d: d["profiles"]["peak_amplitude"])["profiles"]
        data_dicts[0]["summary"] = {
            "best_position": best["position"],
            "best_center": best["peak_center"],
        }
        self._profiles, self._positions = [], []
        return data_dicts, {"reduction": f"sum over image axis {self.axis}"}
