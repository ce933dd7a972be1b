"""Ingest files from a directory as an analysis run (DBEP 6: "data ingested from a file")."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from ..core._errors import AnalysisInputError

#: File suffixes ``bas save`` reads, and how.
READERS = {".npy": "numpy array", ".csv": "table (pandas)", ".tif": "image", ".tiff": "image"}


def stream_name_for(path: Path) -> str:
    """A safe stream name from a file name (``scan 1.tiff`` → ``scan_1``)."""
    name = re.sub(r"[^A-Za-z0-9_-]+", "_", path.stem).strip("_-") or "file"
    return name[:128]


def read_file(path: Path) -> Any:
    """The value a file holds: an array (.npy, .tif/.tiff) or a DataFrame (.csv)."""
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return np.load(path, allow_pickle=False)
    if suffix == ".csv":
        import pandas as pd

        return pd.read_csv(path, float_precision="round_trip")
    if suffix in (".tif", ".tiff"):
        import tifffile

        return tifffile.imread(path)
    raise AnalysisInputError(
        f"cannot ingest {str(path)!r}: unsupported suffix {suffix!r}; accepted: {sorted(READERS)}"
    )


def ingest_files(paths: Iterable[Path]) -> tuple[list[dict[str, dict[str, Any]]], list[Path]]:
    """One ``data_dicts`` entry with a stream per file (key ``data``), and the files read.

    Raises
    ------
    AnalysisInputError
        On an unsupported file, two files mapping to one stream name, or no file at all.
    """
    streams: dict[str, dict[str, Any]] = {}
    read: list[Path] = []
    for path in sorted(paths):
        stream = stream_name_for(path)
        if stream in streams:
            raise AnalysisInputError(
                f"{str(path)!r} and another file both make stream {stream!r}; rename one"
            )
        streams[stream] = {"data": read_file(path)}
        read.append(path)
    if not streams:
        raise AnalysisInputError(f"no files to ingest; accepted suffixes: {sorted(READERS)}")
    return [streams], read


def ingestable_files(directory: Path) -> list[Path]:
    """The files in ``directory`` (not recursive) that ``bas save`` can read."""
    if not directory.is_dir():
        raise AnalysisInputError(f"{str(directory)!r} is not a directory")
    return sorted(p for p in directory.iterdir() if p.is_file() and p.suffix.lower() in READERS)
