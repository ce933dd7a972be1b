"""The quarantine: where ``bas fsck --repair`` puts what it removes, instead of deleting it.

Each repair makes one batch, ``ROOT/.bas-quarantine/<UTC time>-<random>/``:

- ``files/<path>``: each file (or symlink) it took out of the store, at its path relative to the
  store's root;
- ``runs/<uid>.jsonl``: the documents of each incomplete run it deleted from the catalog,
  ``[name, document]`` per line (suitcase-jsonl's form, as the spool writes them);
- ``manifest.json``: what came from where, and why.

Nothing is lost until ``bas fsck --purge`` (:func:`purge_quarantine`) empties it. To undo a
repair, move ``files/<path>`` back to ``ROOT/<path>`` and insert the documents again.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import socket
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core._errors import AnalysisStoreError, FileCollisionError
from ..core._files import fsync_path, remove_empty_directories

#: The quarantine's directory under a store's root (fsck never counts what is in it).
QUARANTINE_DIRECTORY = ".bas-quarantine"
MANIFEST = "manifest.json"


def check_quarantine(root: Path) -> None:
    """Refuse a quarantine that is not a plain directory inside ``root`` (a symlink planted to
    send the files elsewhere, or a file).

    Raises
    ------
    AnalysisStoreError
        Naming ``ROOT/.bas-quarantine`` and what it is.
    """
    path = root / QUARANTINE_DIRECTORY
    if not os.path.lexists(path):
        return
    if path.is_symlink() or not path.is_dir() or os.path.realpath(path) != str(path):
        raise AnalysisStoreError(
            f"{path} is a symlink or not a directory: the quarantine must be a plain directory "
            f"inside the store's root {root}; nothing was moved (remove it by hand after "
            "checking what it is)"
        )


class Quarantine:
    """One repair's batch in ``ROOT/.bas-quarantine`` (created on first use).

    Parameters
    ----------
    root : Path
        The store's root (resolved).
    reason : str
        Why things are put here (written to the manifest).
    """

    def __init__(self, root: Path, reason: str) -> None:
        self.root = root
        self.reason = reason
        self.batch: Path | None = None
        self.files: list[dict[str, str]] = []
        self.runs: list[dict[str, Any]] = []
        self.directories: list[str] = []

    def _directory(self) -> Path:
        if self.batch is None:
            top = self.root / QUARANTINE_DIRECTORY
            check_quarantine(self.root)
            top.mkdir(mode=0o700, exist_ok=True)
            check_quarantine(self.root)  # made just now by someone else
            stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
            batch = top / f"{stamp}-{secrets.token_hex(3)}"
            batch.mkdir(mode=0o700)  # exclusive: a batch of its own
            self.batch = batch
        return self.batch

    def keep_run(self, uid: str, reason: str, documents: Iterator[tuple[str, Any]]) -> Path:
        """Write a run's documents to ``runs/<uid>.jsonl`` (synced) before it is deleted."""
        import event_model

        batch = self._directory()
        (batch / "runs").mkdir(exist_ok=True)
        path = batch / "runs" / f"{uid}.jsonl"
        count = 0
        with path.open("x") as file:
            for name, doc in documents:
                file.write(json.dumps([name, doc], cls=event_model.NumpyEncoder) + "\n")
                count += 1
        fsync_path(path)
        self.runs.append(
            {
                "uid": uid,
                "reason": reason,
                "documents": str(path.relative_to(batch)),
                "records": count,
                "deleted": True,
            }
        )
        return path

    def forget_run(self, uid: str) -> None:
        """The run could not be deleted after all: it stays in the catalog (its copy here too)."""
        for entry in self.runs:
            if entry["uid"] == uid:
                entry["deleted"] = False

    def take(self, path: Path) -> Path:
        """Move ``path`` (a file or a symlink under the root) to ``files/<relative path>``.

        Raises
        ------
        OSError
            If it cannot be moved (e.g. it lies on another file system); it is left in place.
        """
        batch = self._directory()
        target = batch / "files" / path.relative_to(self.root)
        target.parent.mkdir(parents=True, exist_ok=True)
        if os.path.lexists(target):
            raise FileCollisionError(f"{target} exists")
        os.rename(path, target)  # within the root: one file system, nothing copied
        self.files.append({"from": str(path), "to": str(target.relative_to(batch))})
        return target

    def removed_directory(self, path: Path) -> None:
        self.directories.append(str(path))

    def close(self) -> None:
        """Write the manifest (atomically) if anything was put here."""
        if self.batch is None:
            return
        manifest = {
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "root": str(self.root),
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "reason": self.reason,
            "files": self.files,
            "runs": self.runs,
            "empty_directories_removed": self.directories,
            "undo": (
                "move files/<path> back to <root>/<path>; runs/<uid>.jsonl holds the run's "
                "[name, document] lines (store.insert them again)"
            ),
        }
        part = self.batch / f".{MANIFEST}.part"
        part.write_text(json.dumps(manifest, indent=1) + "\n")
        fsync_path(part)
        os.replace(part, self.batch / MANIFEST)
        with contextlib.suppress(OSError):
            fsync_path(self.batch)


@dataclass(frozen=True)
class QuarantineContents:
    """What the quarantine of a store holds (:func:`quarantine_contents`).

    Attributes
    ----------
    directory : Path
        ``ROOT/.bas-quarantine``.
    batches : tuple of Path
        One directory per repair, oldest first.
    files : int
        Files in them (run documents and manifests included).
    size : int
        Their size in bytes.
    """

    directory: Path
    batches: tuple[Path, ...] = ()
    files: int = 0
    size: int = 0


def _entries(directory: Path) -> Iterator[tuple[Path, os.stat_result]]:
    """Every file and symlink under ``directory`` (never following a symlink)."""
    for here, dirnames, filenames in os.walk(directory, followlinks=False):
        for name in sorted(filenames) + sorted(
            d for d in dirnames if os.path.islink(os.path.join(here, d))
        ):
            path = Path(here) / name
            with contextlib.suppress(FileNotFoundError):
                yield path, path.lstat()


def quarantine_contents(root: Path) -> QuarantineContents:
    """The batches under ``ROOT/.bas-quarantine`` and how much they hold (reads only)."""
    directory = root / QUARANTINE_DIRECTORY
    if not directory.is_dir() or directory.is_symlink():
        return QuarantineContents(directory)
    batches = tuple(sorted(p for p in directory.iterdir() if p.is_dir() and not p.is_symlink()))
    files = size = 0
    for _, status in _entries(directory):
        files += 1
        size += status.st_size if stat.S_ISREG(status.st_mode) else 0
    return QuarantineContents(directory, batches, files, size)


@dataclass(frozen=True)
class PurgeResult:
    """What :func:`purge_quarantine` removed.

    Attributes
    ----------
    directory : Path
        ``ROOT/.bas-quarantine``.
    removed : tuple of Path
        Every file (and symlink) removed, batch by batch.
    size : int
        Their size in bytes.
    batches : tuple of Path
        The batch directories removed.
    """

    directory: Path
    removed: tuple[Path, ...] = ()
    size: int = 0
    batches: tuple[Path, ...] = field(default=())

    def as_text(self) -> str:
        """One line per file removed, then a summary."""
        lines = [f"removed {path}" for path in self.removed]
        lines.append(
            f"purged the quarantine {self.directory}: {len(self.batches)} batch(es), "
            f"{len(self.removed)} file(s), {self.size} bytes"
            if self.batches
            else f"the quarantine {self.directory} is empty: nothing to purge"
        )
        return "\n".join(lines)


def purge_quarantine(root: Path) -> PurgeResult:
    """Empty ``ROOT/.bas-quarantine`` (``bas fsck --purge``): remove every batch for good.

    Asks nothing. Symlinks in it are removed themselves, never what they point to; a
    quarantine that is itself a symlink is refused.

    Raises
    ------
    AnalysisStoreError
        If ``ROOT/.bas-quarantine`` is a symlink or not a directory.
    """
    directory = root / QUARANTINE_DIRECTORY
    if not os.path.lexists(directory):
        return PurgeResult(directory)
    check_quarantine(root)
    removed: list[Path] = []
    size = 0
    batches: list[Path] = []
    for batch in sorted(directory.iterdir()):
        if batch.is_dir() and not batch.is_symlink():
            for path, status in _entries(batch):
                removed.append(path)
                size += status.st_size if stat.S_ISREG(status.st_mode) else 0
            shutil.rmtree(batch)  # never follows symlinks (fd-based on Linux)
        else:
            removed.append(batch)
            batch.unlink()
        batches.append(batch)
    remove_empty_directories([directory], root)
    return PurgeResult(directory, tuple(removed), size, tuple(batches))
