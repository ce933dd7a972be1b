"""Files written under temporary names, then published with no overwrite, or removed on failure."""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path
from types import TracebackType
from typing import Self

from ._files import fsync_path


class StagedFiles:
    """Track files (and the directories made for them) until they are published or discarded.

    Use as a context manager: leaving the block with an exception removes every staged file and
    every directory this object created, so a failed save leaves the root as it found it.
    """

    def __init__(self) -> None:
        self._staged: list[tuple[Path, Path]] = []  # (temporary, final)
        self._made_dirs: list[Path] = []
        self._published: list[Path] = []

    def stage(self, final: Path) -> Path:
        """Create ``final``'s directory if needed; return a fresh temporary path beside it."""
        if final.exists():
            raise FileExistsError(f"{final} already exists; files are never overwritten")
        missing = [p for p in (final.parent, *final.parent.parents) if not p.exists()]
        for directory in reversed(missing):
            directory.mkdir()
            self._made_dirs.append(directory)
        temporary = final.with_name(f".{final.name}.{secrets.token_hex(6)}.part")
        self._staged.append((temporary, final))
        return temporary

    def publish(self) -> list[Path]:
        """Give every staged file its final name, refusing to replace an existing file."""
        for temporary, final in self._staged:
            os.link(temporary, final)  # fails with FileExistsError instead of overwriting
            self._published.append(final)
            temporary.unlink()
        for directory in {final.parent for _, final in self._staged}:
            fsync_path(directory)
        published, self._staged = self._published, []
        return published

    def discard(self) -> None:
        """Remove staged and published files and the directories this object made."""
        for temporary, _ in self._staged:
            temporary.unlink(missing_ok=True)
        for final in self._published:
            final.unlink(missing_ok=True)
        for directory in reversed(self._made_dirs):
            with contextlib.suppress(OSError):  # not empty: something else lives there now
                directory.rmdir()
        self._staged, self._published, self._made_dirs = [], [], []

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None:
            self.discard()
