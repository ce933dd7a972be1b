"""Small file-lifecycle helpers shared by the writers and handlers."""

from __future__ import annotations

import contextlib
import math
import os
from types import TracebackType
from typing import Self


def fsync_path(path: str | os.PathLike[str]) -> None:
    """Flush a closed file's data to stable storage (a derived run is as precious as raw data)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ClosingContext:
    """Context-manager behaviour for anything with an idempotent ``close()``."""

    def close(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class ReadingHandle(ClosingContext):
    """A handler's file handle, closed when the handler is collected.

    ``event_model.Filler`` caches handlers and never closes them; without this their files would
    stay open until interpreter exit.
    """

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # nothing useful can be done during collection
            self.close()


def frames_per_chunk(
    itemsize: int, frame_shape: tuple[int, ...], target_bytes: int = 1 << 20
) -> int:
    """How many frames make a chunk of about ``target_bytes`` (at least one).

    A zero-length axis is counted as one, as it is in the chunk shape itself.
    """
    chunk_frame_bytes = itemsize * math.prod(max(1, n) for n in frame_shape)
    return max(1, target_bytes // chunk_frame_bytes)
