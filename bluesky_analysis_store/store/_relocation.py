"""A store that was moved, copied or reached through another mount point, readable again.

tiled records every asset as an absolute URI (``file://localhost/DIR/files/...``,
``duckdb:///DIR/tables.duckdb``) and reads it only there. A store's directory records where its
catalog's paths point (:data:`LOCATION_FILE`), and each time the store is opened:

* **the same directory**: nothing to do (one small file read);
* **the recorded directory still reaches this one** (another mount point, a symlinked path):
  the recorded paths lead to the same files, so tiled may read them there (they are added to
  its readable storage, and so pass containment); nothing is changed;
* **otherwise the store was moved, renamed or copied**: the catalog's asset URIs under the
  recorded directory are rewritten to this one, in one transaction, and a warning says so. No
  file is touched. A read-only open changes nothing and warns that its files cannot be read
  until the store is opened for writing once (``bas fsck --repair`` does).

A store made before this record existed has its recorded directory read from its catalog:
the DuckDB table storage's URI, else the directory before ``files/<run uid>/`` of a file.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from ..core._errors import AnalysisStoreError

#: Where a store's directory records the directory its catalog's paths point into.
LOCATION_FILE = ".bas-location.json"

logger = logging.getLogger(__name__)

T = TypeVar("T")

# a run's files lie under ROOT/<run uid>/ and ROOT is DIRECTORY/files
_RUN_FILE = re.compile(r"^(/.*)/files/[0-9a-fA-F-]{32,36}/")


@dataclass(frozen=True)
class StoreLocation:
    """Where a store's catalog records its files, seen from the directory it is opened in.

    Attributes
    ----------
    directory : Path
        The store's directory now (resolved).
    recorded : Path or None
        The directory the catalog's paths point into, when that is not ``directory`` (None:
        the same, or nothing recorded yet).
    same_files : bool
        ``recorded`` reaches the same directory (another mount point or a symlinked path).
    unrecorded : bool
        The directory has no :data:`LOCATION_FILE` yet.
    """

    directory: Path
    recorded: Path | None = None
    same_files: bool = False
    unrecorded: bool = False

    @property
    def aliases(self) -> tuple[Path, ...]:
        """Other paths of this very directory that the catalog's paths go through."""
        return (self.recorded,) if self.recorded is not None and self.same_files else ()

    @property
    def moved(self) -> bool:
        """The catalog's paths point into another directory than this one's files."""
        return self.recorded is not None and not self.same_files


def read_location(directory: Path) -> Path | None:
    """The directory recorded in ``DIRECTORY/.bas-location.json``, or None (none, unreadable)."""
    try:
        recorded = json.loads((directory / LOCATION_FILE).read_text())["directory"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return Path(recorded) if isinstance(recorded, str) and os.path.isabs(recorded) else None


def write_location(directory: Path) -> None:
    """Record ``directory`` as where the catalog's paths point (written whole, then renamed)."""
    part = directory / f"{LOCATION_FILE}.part"
    part.write_text(json.dumps({"directory": str(directory)}) + "\n")
    os.replace(part, directory / LOCATION_FILE)


def _same_directory(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def locate_store(directory: Path, catalog_uri: str | None) -> StoreLocation:
    """Where the catalog of the store in ``directory`` (resolved) records its files.

    ``catalog_uri`` None: a new catalog, nothing recorded yet.
    """
    recorded = read_location(directory)
    unrecorded = recorded is None
    if unrecorded and catalog_uri is not None and _may_exist(catalog_uri):
        recorded = in_thread(lambda: _recorded_in_catalog(catalog_uri))
    if recorded is None or recorded == directory:
        return StoreLocation(directory, unrecorded=unrecorded)
    return StoreLocation(directory, recorded, _same_directory(recorded, directory), unrecorded)


def _may_exist(catalog_uri: str) -> bool:
    """False for an SQLite catalog whose file does not exist (asking would create it)."""
    if not catalog_uri.startswith("sqlite"):
        return True
    return Path(catalog_uri.split(":///", 1)[1].split("?", 1)[0]).is_file()


def in_thread(make: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine to its end in a thread of its own (the caller may be inside a running
    event loop, as a notebook cell is)."""
    result: list[T] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            result.append(asyncio.run(make()))  # type: ignore[arg-type]
        except BaseException as error:  # re-raised in the caller's thread
            failure.append(error)

    thread = threading.Thread(target=run, name="bas-relocation")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return result[0]


def _engine(catalog_uri: str) -> Any:
    from sqlalchemy.ext.asyncio import create_async_engine

    return create_async_engine(catalog_uri)


async def _recorded_in_catalog(catalog_uri: str) -> Path | None:
    """The store directory a catalog made before :data:`LOCATION_FILE` existed points into."""
    from sqlalchemy import select
    from sqlalchemy.exc import DBAPIError
    from tiled.catalog import orm
    from tiled.utils import path_from_uri

    engine = _engine(catalog_uri)
    try:
        async with engine.connect() as connection:
            tables = select(orm.Asset.data_uri).where(
                orm.Asset.data_uri.like("duckdb:///%/tables.duckdb")
            )
            for (uri,) in (await connection.execute(tables.limit(1))).all():
                return path_from_uri(uri).parent
            files = select(orm.Asset.data_uri).where(orm.Asset.data_uri.like("file:%/files/%"))
            for (uri,) in (await connection.execute(files.limit(20))).all():
                if match := _RUN_FILE.match(str(path_from_uri(uri))):
                    return Path(match.group(1))
    except DBAPIError:  # a catalog tiled has not initialised yet: nothing recorded
        return None
    finally:
        await engine.dispose()
    return None


def moved_uri(uri: str, old: Path, new: Path) -> str | None:
    """``uri`` with its path moved from under ``old`` to under ``new``, or None when its path
    is not under ``old`` (or it is not a ``file``, ``duckdb`` or ``sqlite`` URI)."""
    parts = urlsplit(uri)
    if parts.scheme not in ("file", "duckdb", "sqlite"):
        return None
    from tiled.utils import path_from_uri

    path = path_from_uri(uri)
    if not path.is_relative_to(old):
        return None
    written = parts.path
    lead = written[: len(written) - len(written.lstrip("/")) - 1]  # "/" more for duckdb:////
    rest = written[len(lead) + len(str(old)) :]
    after_scheme = len(parts.scheme) + 1
    start = after_scheme + (2 + len(parts.netloc) if uri[after_scheme:].startswith("//") else 0)
    end = start + len(written)
    return uri[:start] + lead + str(new) + rest + uri[end:]


async def _relocate(catalog_uri: str, old: Path, new: Path) -> int:
    from sqlalchemy import select, update
    from sqlalchemy.exc import IntegrityError
    from tiled.catalog import orm

    engine = _engine(catalog_uri)
    try:
        async with engine.begin() as connection:  # one transaction: all or nothing
            candidates = select(orm.Asset.id, orm.Asset.data_uri).where(
                orm.Asset.data_uri.contains(str(old), autoescape=True)
            )
            count = 0
            for asset_id, uri in (await connection.execute(candidates)).all():
                if (moved := moved_uri(uri, old, new)) is None:
                    continue
                try:
                    await connection.execute(
                        update(orm.Asset).where(orm.Asset.id == asset_id).values(data_uri=moved)
                    )
                except IntegrityError as error:
                    raise AnalysisStoreError(
                        f"cannot move the recorded path {uri!r} to {moved!r}: the catalog "
                        f"already records that path for another asset; nothing was changed "
                        f"(the store's files are recorded under {old})"
                    ) from error
                count += 1
    finally:
        await engine.dispose()
    return count


def relocate(catalog_uri: str, location: StoreLocation) -> int:
    """Point the catalog's asset URIs from ``location.recorded`` to ``location.directory`` and
    record the new directory; the number of assets rewritten. Touches no file of the store."""
    if location.recorded is None:
        write_location(location.directory)
        return 0
    count = in_thread(lambda: _relocate(catalog_uri, location.recorded, location.directory))  # type: ignore[arg-type]
    write_location(location.directory)
    logger.warning(
        "the analysis store in %s was moved (or copied) from %s: %d recorded file path(s) of "
        "its catalog now point into %s; no file was changed",
        location.directory,
        location.recorded,
        count,
        location.directory,
    )
    return count
