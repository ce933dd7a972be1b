"""A store's files identified relative to the store: recorded paths mapped onto its root now.

tiled records each asset as an absolute ``data_uri``, and a spooled ``stream_resource`` keeps
an absolute ``uri``: the paths as the saving process saw them. A store that was moved or
renamed, or that is reached through another mount point or a symlinked path, holds the same
files under another absolute path. Compared by absolute path, each would be "missing at the old
path and orphaned at the new"; compared relative to the store, they are the same files.

A save puts a run's files under ``ROOT/<run uid>/``, so a recorded path names the root it was
recorded under: the part before the run's uid. Every other recorded path under such a root is
mapped onto the current root the same way.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse
from urllib.request import url2pathname


def path_from_uri(uri: str) -> Path | None:
    """The local path of a ``file:`` URI (``file:///p`` or ``file://localhost/p``), else None."""
    parsed = urlparse(uri)
    if parsed.scheme != "file" or parsed.netloc not in ("", "localhost"):
        return None
    return Path(os.path.normpath(url2pathname(parsed.path)))


def asset_files(node: Any) -> Iterator[tuple[Path, bool]]:
    """``(path, is_directory)`` of every ``file:`` asset of ``node`` (a tiled client node) and the
    nodes below it: the files a run's data is read from (fsck's references, an export's files)."""
    base = getattr(node, "base", node)  # a composite stream's plain container
    family = str(getattr(base, "structure_family", ""))
    if family.endswith(("container", "composite")):
        for _, child in base.items():
            yield from asset_files(child)
        return
    for data_source in base.data_sources() or ():
        for asset in data_source.assets:
            path = path_from_uri(asset.data_uri)
            if path is not None:
                yield path, bool(asset.is_directory)


def document_file(name: str, doc: object, root: Path) -> Path | None:
    """The file a resource (``root`` + ``resource_path``; ``root`` if it names none) or stream
    resource (its ``file:`` URI) document points to, normalized but not resolved; else None."""
    if not isinstance(doc, dict):
        return None
    if name == "stream_resource" and isinstance(doc.get("uri"), str):
        return path_from_uri(doc["uri"])
    if name == "resource" and isinstance(doc.get("resource_path"), str):
        base = Path(doc.get("root") or root)
        return Path(os.path.normpath(base / doc["resource_path"]))
    return None


def recorded_root(recorded: Path, uid: str) -> Path | None:
    """The root a run's file was recorded under: the part of its path before the run's uid
    (``/old/files`` for ``/old/files/<uid>/primary/image.h5``), or None."""
    parts = recorded.parts
    for index in range(len(parts) - 1, 1, -1):  # never "/" alone
        if parts[index] == uid:
            return Path(*parts[:index])
    return None


@dataclass(frozen=True)
class Located:
    """Where a recorded file is in the store now.

    Attributes
    ----------
    recorded : Path
        The path the catalog (or a spooled document) records.
    current : Path or None
        The same file under the store's current root, or None if it is not the store's.
    recorded_under : Path or None
        The root it was recorded under, when that is not the current root (the store was
        moved, or the path goes through another mount point or a symlink).
    reachable : bool
        The recorded path still reaches the file (always True when ``recorded_under`` is None
        and the file exists).
    """

    recorded: Path
    current: Path | None
    recorded_under: Path | None = None
    reachable: bool = True

    @property
    def moved(self) -> bool:
        """Found under the current root, but its recorded path no longer leads to it."""
        return self.recorded_under is not None and not self.reachable


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


class Locator:
    """Maps recorded paths onto the store's current ``root``.

    Parameters
    ----------
    root : Path
        The store's root now (resolved).
    recorded_roots : iterable of Path
        Roots the catalog's paths may have been recorded under (see :func:`recorded_root`).
    """

    def __init__(self, root: Path, recorded_roots: Iterable[Path] = ()) -> None:
        self.root = root
        self.recorded_roots = sorted(
            {r for r in recorded_roots if r != root}, key=lambda r: -len(r.parts)
        )

    def locate(self, recorded: Path) -> Located:
        """Where ``recorded`` is in the store now (``current`` None: not in the store)."""
        recorded = Path(os.path.normpath(recorded))
        if recorded.is_relative_to(self.root):
            return Located(recorded, recorded)
        real = Path(os.path.realpath(recorded))
        if real.is_relative_to(self.root):  # reached through a symlinked path
            return Located(recorded, real, self._root_of(recorded), reachable=True)
        for old in self.recorded_roots:
            if recorded.is_relative_to(old):
                current = self.root / recorded.relative_to(old)
                if os.path.lexists(current):
                    return Located(recorded, current, old, _same_file(recorded, current))
                if not os.path.lexists(recorded):  # in neither place: missing from the store
                    return Located(recorded, current, old, reachable=False)
                break  # only at its recorded place: a file outside the store
        return Located(recorded, None)

    def _root_of(self, recorded: Path) -> Path | None:
        for old in self.recorded_roots:
            if recorded.is_relative_to(old):
                return old
        return None
