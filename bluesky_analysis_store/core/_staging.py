"""Files written under temporary names, then published with no overwrite, or removed on failure.

Under a store's root nothing is reached through a symbolic link: each directory is opened (or
made) relative to its parent's descriptor with ``O_NOFOLLOW``, and the files are made in the
directory so opened, so a link planted under the root (pointing out of it) is refused instead of
followed, and nothing is written outside the root.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

from ._errors import FileCollisionError, UnsafePathError

_DIRECTORY_FLAGS = (
    os.O_RDONLY
    | getattr(os, "O_DIRECTORY", 0)
    | getattr(os, "O_NOFOLLOW", 0)
    | getattr(os, "O_CLOEXEC", 0)
)
#: Linux names an open descriptor's file in /proc: a path through it reaches the directory held,
#: whatever happens to the names above it, and works for any writer that takes a path.
_FD_DIRECTORY = Path("/proc/self/fd")


def _descriptor_path(descriptor: int) -> Path | None:
    """Where the directory held by ``descriptor`` is now, if the system says (Linux)."""
    try:
        return Path(os.readlink(_FD_DIRECTORY / str(descriptor)))
    except OSError:
        return None


@dataclass
class _Staged:
    directory: Path  # the final directory (under the resolved root)
    temporary: str  # the temporary file's name in it
    final: str  # the final name


class StagedFiles:
    """Track files (and the directories made for them) until they are published or discarded.

    Use as a context manager: leaving the block with an exception removes every staged file and
    every directory this object created, so a failed save leaves the root as it found it. The
    directories it holds open are released when the block ends.
    """

    def __init__(self) -> None:
        self._staged: list[_Staged] = []
        self._made_dirs: list[Path] = []  # in the order made
        self._published: list[_Staged] = []
        self._descriptors: dict[Path, int] = {}  # each directory walked, held open
        self._roots: dict[Path, Path] = {}  # directory -> the resolved root it lies in

    def _walk(self, directory: Path, root: Path) -> int:
        """Open (making what is missing) each directory from ``root`` down to ``directory``
        without following a symbolic link; return ``directory``'s descriptor."""
        if directory in self._descriptors:
            return self._descriptors[directory]
        if root not in self._descriptors:
            self._descriptors[root] = os.open(root, _DIRECTORY_FLAGS & ~os.O_NOFOLLOW)
        current, descriptor = root, self._descriptors[root]
        for part in directory.relative_to(root).parts:
            parent, current = descriptor, current / part
            if current in self._descriptors:
                descriptor = self._descriptors[current]
                continue
            try:
                os.mkdir(part, dir_fd=parent)
                self._made_dirs.append(current)
            except FileExistsError:
                pass  # it exists: opened below, if it is a real directory
            try:
                descriptor = os.open(part, _DIRECTORY_FLAGS, dir_fd=parent)
            except OSError as error:  # ELOOP: a symbolic link; ENOTDIR: a file
                raise UnsafePathError(
                    f"{current} is a symbolic link or not a directory ({error.strerror}); the "
                    f"store makes every directory under its root {root} itself and follows no "
                    "link there, so that nothing is written outside it"
                ) from None
            self._descriptors[current] = descriptor
            self._roots[current] = root
            self._check_inside(current, root)
        return descriptor

    def _check_inside(self, directory: Path, root: Path) -> None:
        """The directory held for ``directory`` is still there, inside ``root`` (not moved, nor
        replaced by a link, while the save was writing)."""
        where = _descriptor_path(self._descriptors[directory])
        if where is not None and (where != directory or not where.is_relative_to(root)):
            raise UnsafePathError(
                f"{directory} was moved to {where} while the save was writing (or replaced); "
                f"nothing is published, and nothing is written outside the root {root}"
            )

    def _temporary_path(self, item: _Staged) -> Path:
        descriptor = self._descriptors[item.directory]
        through_fd = _FD_DIRECTORY / str(descriptor)
        if through_fd.is_dir():
            return through_fd / item.temporary
        return item.directory / item.temporary  # no /proc: the directory's name (checked)

    def stage(self, final: Path, root: Path) -> Path:
        """Make ``final``'s directories under ``root`` if needed; return a fresh temporary path
        beside it, for a writer to create.

        Parameters
        ----------
        final : Path
            Where the file goes, inside ``root`` (as given by ``contained_path``).
        root : Path
            The directory the file must stay in; its own path may go through links.

        Raises
        ------
        UnsafePathError
            If ``final`` is not inside ``root``, or a directory on the way is a symbolic link
            (or a file).
        FileCollisionError
            If ``final`` exists already.
        """
        resolved_root = Path(root).resolve()
        final = Path(final)
        if not final.is_absolute() or not final.is_relative_to(resolved_root):
            raise UnsafePathError(f"{final} is not inside the root {resolved_root}")
        if final.parent == final or final == resolved_root:
            raise UnsafePathError(f"{final} names no file inside the root {resolved_root}")
        descriptor = self._walk(final.parent, resolved_root)
        try:
            os.stat(final.name, dir_fd=descriptor, follow_symlinks=False)
        except FileNotFoundError:
            pass
        else:
            raise FileCollisionError(f"{final}: file exists already; files are never overwritten")
        item = _Staged(final.parent, f".{final.name}.{secrets.token_hex(6)}.part", final.name)
        self._staged.append(item)
        return self._temporary_path(item)

    def publish(self) -> list[Path]:
        """Give every staged file its final name, refusing to replace an existing file."""
        for directory in {item.directory for item in self._staged}:
            self._check_inside(directory, self._roots.get(directory, directory))
        for item in self._staged:
            descriptor = self._descriptors[item.directory]
            try:  # a hard link fails instead of overwriting
                os.link(
                    item.temporary,
                    item.final,
                    src_dir_fd=descriptor,
                    dst_dir_fd=descriptor,
                    follow_symlinks=False,
                )
            except FileExistsError:
                raise FileCollisionError(
                    f"{item.directory / item.final} appeared while the save was writing; "
                    "files are never overwritten"
                ) from None
            self._published.append(item)
            os.unlink(item.temporary, dir_fd=descriptor)
        for directory in {item.directory for item in self._staged}:
            os.fsync(self._descriptors[directory])
        published = [item.directory / item.final for item in self._published]
        self._staged, self._published = [], []
        self._release()
        return published

    def discard(self) -> None:
        """Remove staged and published files and the directories this object made."""
        for item in self._staged:
            with contextlib.suppress(OSError):
                os.unlink(item.temporary, dir_fd=self._descriptors[item.directory])
        for item in self._published:
            with contextlib.suppress(OSError):
                os.unlink(item.final, dir_fd=self._descriptors[item.directory])
        for directory in reversed(self._made_dirs):
            parent = self._descriptors.get(directory.parent)
            with contextlib.suppress(OSError):  # not empty: something else lives there now
                if parent is not None:
                    os.rmdir(directory.name, dir_fd=parent)
        self._staged, self._published, self._made_dirs = [], [], []
        self._release()

    def _release(self) -> None:
        """Close every directory descriptor held."""
        descriptors, self._descriptors, self._roots = self._descriptors, {}, {}
        for descriptor in descriptors.values():
            os.close(descriptor)

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
        self._release()
