"""``bas replay DIR --into TARGET``: a JSONL store's runs into a tiled store, with every
guarantee of a direct save.

Per run, in the order the JSONL store took them (parents before the runs derived from them):

* its lineage is looked up in the target as a save looks it up
  (:meth:`~._saving.SavingStore._lineage_match`): the same lineage and content under another
  uid is already there (skipped); other content is a :class:`RunConflictError` (refused);
* its files are copied under the target's root at the same place relative to the root
  (``RUN_UID/STREAM/KEY.SUFFIX``): each must resolve inside the JSONL store's root (symlinks
  followed), lands inside the target's (:func:`~..core._paths.contained_path`), is created
  exclusively through :class:`~..core._staging.StagedFiles`; a file already there with the
  same bytes is kept (a second replay), one with other bytes refuses the run;
* its documents, pointing at the copies, go through the target's own insert pipeline
  (provenance required, idempotence, the document gate, TiledWriter, the server's asset
  containment) as the spool's replay sends them (:func:`~..insert._spool.replay_documents`): a
  run already there whole is checked, not inserted again.

A run the target refuses is taken back (its node deleted if this replay made it, the files
it copied removed), reported with the reason, and the rest go on.
"""

from __future__ import annotations

import filecmp
import logging
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core._errors import FileCollisionError, UnsafePathError
from ..core._paths import contained_path
from ..core._staging import StagedFiles
from ..insert._spool import ReplayReport, replay_documents
from ._locations import document_file
from ._locks import lineage_lock
from ._saving import remove_files

if TYPE_CHECKING:
    from ._jsonl_store import JsonlStore
    from ._store import AnalysisStore

logger = logging.getLogger("bluesky_analysis_store.store")


def _copy(source: Path, destination: Path, root: Path) -> bool:
    """Copy ``source`` to ``destination`` under ``root`` (exclusive create); False when the same
    bytes are there already."""
    if destination.exists():
        if destination.is_file() and filecmp.cmp(source, destination, shallow=False):
            return False
        raise FileCollisionError(
            f"{destination} exists with other content than {source}; files are never overwritten"
        )
    with StagedFiles() as staged:
        shutil.copyfile(source, staged.stage(destination, root))
        staged.publish()
    return True


def relocated(
    documents: list[tuple[str, Any]], source_root: Path, target_root: Path
) -> tuple[list[tuple[str, Any]], list[Path]]:
    """``documents`` with every file they name copied from ``source_root`` to the same place
    under ``target_root`` and pointed at there; and the files this call copied."""
    source_root, target_root = source_root.resolve(), target_root.resolve()
    moved: list[tuple[str, Any]] = []
    copied: list[Path] = []
    try:
        for name, doc in documents:
            path = document_file(name, doc, source_root)
            if path is None:
                moved.append((name, doc))
                continue
            resolved = path.resolve()
            if not resolved.is_relative_to(source_root) or not resolved.is_file():
                raise UnsafePathError(
                    f"{name} {doc.get('uid')!r} names {str(path)!r}, which is not a file inside "
                    f"the JSONL store's root {str(source_root)!r}; nothing of the run is copied"
                )
            relative = resolved.relative_to(source_root)
            destination = contained_path(target_root, relative)
            if _copy(resolved, destination, target_root):
                copied.append(destination)
            doc = dict(doc)
            if name == "stream_resource":
                doc["uri"] = destination.as_uri()
            else:
                doc["root"], doc["resource_path"] = str(target_root), str(relative)
            moved.append((name, doc))
    except BaseException:
        remove_files(copied, target_root)
        raise
    return moved, copied


def replay_into(source: JsonlStore, target: AnalysisStore) -> ReplayReport:
    """Insert every run of the JSONL store ``source`` into ``target`` (see the module)."""
    from ._fsck import delete_run

    report = ReplayReport()
    for uid in source:
        path = source.run_file(uid)
        copied: list[Path] = []
        pipeline = target._pipeline(None)  # a fresh one per run, no spool (as replay's)
        try:
            documents = source.documents(uid)
            start = documents[0][1] if documents and documents[0][0] == "start" else {}
            lineage = start.get("lineage_hash")
            with lineage_lock(target.root, str(lineage or uid)):
                found = target._lineage_match(start) if lineage and _succeeded(documents) else None
                if found is not None and found != uid:
                    report.already_stored.append(f"{uid} (as run {found}, the same lineage)")
                    continue
                documents, copied = relocated(documents, source.root, target.root)
                outcome, _, detail = replay_documents(
                    documents, target.runs, pipeline, lambda u: delete_run(target.runs[u])
                )
        except Exception as error:
            _take_back(target, pipeline, uid, copied)
            report.failed.append((path, f"{type(error).__name__}: {error!s:.500}"))
            continue
        finally:
            pipeline.close()
        if outcome == "inserted":
            report.inserted.append((uid, int(detail)))
        elif outcome == "already_stored":
            remove_files(copied, target.root)  # nothing new refers to them
            report.already_stored.append(uid)
        else:
            _take_back(target, None, uid, copied)
            report.failed.append((path, str(detail)))
    return report


def _succeeded(documents: list[tuple[str, Any]]) -> bool:
    return any(name == "stop" and doc.get("exit_status") == "success" for name, doc in documents)


def _take_back(target: AnalysisStore, pipeline: Any, uid: str, copied: list[Path]) -> None:
    """A run the target refused: delete its node if this replay made it, and the files it
    copied."""
    from ._fsck import delete_run

    if pipeline is not None and pipeline.created(uid):
        try:
            delete_run(target.runs[uid])
        except Exception as error:  # e.g. a key without the delete scope: fsck reports it
            logger.warning("could not delete the half-replayed run %s: %s", uid, error)
        pipeline.discard(uid)
    remove_files(copied, target.root)
