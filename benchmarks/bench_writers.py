"""Writer throughput against its anchor, in one process on the same data.

    .venv/bin/python benchmarks/bench_writers.py [--frames 100] [--repeats 5]

Anchor: raw h5py writing the same layout (one chunked float32 dataset, frame by frame) and
fsync-ing the file, which is what a careful hand-written writer does. Printed: the median time of
each and the throughput ratio (ours / anchor; ≥ 0.9 is the target). Also the NPY and TIFF pairs
against the same anchor, and the import time of the package.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np

from bluesky_analysis_store import HDF5_PAIR, NPY_PAIR, TIFF_PAIR


def raw_h5py(path: Path, frames: np.ndarray) -> None:
    with h5py.File(path, "x") as f:
        dataset = f.create_dataset(
            "data", shape=frames.shape, dtype=frames.dtype, chunks=(1, *frames.shape[1:])
        )
        for i, frame in enumerate(frames):
            dataset[i] = frame
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def through_pair(pair) -> Callable[[Path, np.ndarray], None]:
    def write(path: Path, frames: np.ndarray) -> None:
        kwargs = pair.resource_kwargs(frames[0], pair.describe(frames[0]))
        with pair.writer(str(path), **kwargs) as writer:
            for frame in frames:
                writer(frame)

    return write


def median_seconds(write, frames: np.ndarray, repeats: int, directory: Path) -> float:
    times = []
    for i in range(repeats):
        path = directory / f"{write.__name__}-{i}-{time.monotonic_ns()}"
        start = time.perf_counter()
        write(path, frames)
        times.append(time.perf_counter() - start)
        path.unlink()
    return statistics.median(times)


def import_seconds(repeats: int = 5) -> float:
    code = "import time; t = time.perf_counter(); import bluesky_analysis_store; "
    code += "print(time.perf_counter() - t)"
    runs = [
        float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout)
        for _ in range(repeats)
    ]
    return statistics.median(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    frames = np.random.default_rng(0).random((args.frames, 512, 512), dtype=np.float32)
    megabytes = frames.nbytes / 1e6
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        # interleave a warm-up so page-cache state is alike for both
        median_seconds(raw_h5py, frames, 1, directory)
        anchor = median_seconds(raw_h5py, frames, args.repeats, directory)
        print(f"anchor raw h5py + fsync: {anchor:.3f} s ({megabytes / anchor:.0f} MB/s)")
        for pair in (HDF5_PAIR, NPY_PAIR, TIFF_PAIR):
            write = through_pair(pair)
            write.__name__ = pair.spec
            ours = median_seconds(write, frames, args.repeats, directory)
            print(
                f"{pair.spec:>9}: {ours:.3f} s ({megabytes / ours:.0f} MB/s); "
                f"throughput ratio vs anchor {anchor / ours:.2f}x"
            )
    print(f"import bluesky_analysis_store: {import_seconds():.3f} s (target <= 0.3 s)")


if __name__ == "__main__":
    main()
