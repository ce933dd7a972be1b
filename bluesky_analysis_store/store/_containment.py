"""Containment of a store's assets: nothing outside the store is registered or served.

An asset (a file or directory a tiled node reads) must lie inside the store's own
directories: its ``files/`` (derived files) and tiled's writable data directory (``data/``),
the file storage of the tree's context. Paths are checked with ``Path.resolve()`` (symlinks
followed, ``..`` collapsed) and ``is_relative_to``, never with tiled's ``commonpath`` check,
which resolves neither. The only other assets accepted are tiled's own table storage, named
by its exact URI.

The rule is applied where an asset is registered (the catalog's ``create_node`` and
``put_data_source``), where tiled opens assets to read them (its readable-storage check,
called for every asset an adapter is built from) and on the asset routes that send a file's
bytes (:class:`AssetRoutes`), every time, so that a symlink planted after registration is
caught when it would be read.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from ..core._errors import UnsafePathError
from ._asgi import AppWrapper, reply

#: The asset routes that open a file themselves (tiled checks neither their asset nor their
#: ``relative_path`` against its readable storage).
ASSET_ROUTES = ("/api/v1/asset/bytes/", "/api/v1/asset/manifest/")


@dataclass(frozen=True)
class StoreStorage:
    """Where a store's assets may lie: directories (resolved once) and table-storage URIs."""

    directories: tuple[Path, ...]
    table_uris: frozenset[str]

    @classmethod
    def of(cls, context: Any) -> StoreStorage:
        """The storage of a tiled catalog ``context`` (its readable storage, which includes the
        writable), computed once per context."""
        known = _STORAGE.get(context)
        if known is None:
            from tiled.storage import FileStorage, SQLStorage

            storages = list(context.readable_storage.values())
            known = cls(
                tuple(Path(s.path).resolve() for s in storages if isinstance(s, FileStorage)),
                frozenset(_without_query(s.uri) for s in storages if isinstance(s, SQLStorage)),
            )
            _STORAGE[context] = known
        return known

    def accepted(self) -> str:
        """What is accepted, for error messages."""
        places = ", ".join(str(d) for d in self.directories) or "(none)"
        return f"file:// paths inside {places} (symlinks resolved) or tiled's own table storage"

    def problem(self, data_uri: str) -> str | None:
        """Why the asset ``data_uri`` is not the store's, or None when it is."""
        if not isinstance(data_uri, str):
            return f"asset URI {data_uri!r} is not a string"
        parts = urlsplit(data_uri)
        if parts.scheme != "file":
            if _without_query(data_uri) in self.table_uris:
                return None
            return f"asset {data_uri!r} is neither a file:// URI nor the store's table storage"
        if parts.netloc not in ("", "localhost") or parts.query or parts.fragment:
            return (
                f"asset {data_uri!r} names a host, query or fragment; only local paths are served"
            )
        # tiled's path_from_uri takes the path as written; a reader could also decode it
        for path in {parts.path, unquote(parts.path)}:
            if (outside := self.path_problem(Path(path))) is not None:
                return f"asset {data_uri!r}: {outside}"
        return None

    def path_problem(self, path: Path) -> str | None:
        """Why ``path`` is not inside the store's directories, or None when it is."""
        if not path.is_absolute():
            return f"{str(path)!r} is not an absolute path"
        resolved = path.resolve()
        if any(resolved != d and resolved.is_relative_to(d) for d in self.directories):
            return None
        return f"{str(path)!r} resolves to {str(resolved)!r}, outside the store"

    def refusal(self, data_uri: str) -> str | None:
        """The full message refusing ``data_uri`` (with what is accepted), or None."""
        problem = self.problem(data_uri)
        return None if problem is None else f"{problem}; accepted: {self.accepted()}"


_STORAGE: weakref.WeakKeyDictionary[Any, StoreStorage] = weakref.WeakKeyDictionary()


def _without_query(uri: str) -> str:
    return uri.split("?", 1)[0]


def data_sources_refusal(storage: StoreStorage, data_sources: Any) -> str | None:
    """Why assets given with ``data_sources`` (tiled ``DataSource`` models) may not be
    registered, or None."""
    for data_source in data_sources or []:
        for asset in getattr(data_source, "assets", None) or []:
            if (refusal := storage.refusal(asset.data_uri)) is not None:
                return refusal
    return None


class AssetRoutes(AppWrapper):
    """ASGI middleware: the asset routes serve only files inside the store.

    tiled's ``/asset/bytes`` and ``/asset/manifest`` routes open an asset's file (and, for a
    directory asset, ``relative_path`` inside it) without checking either. Here the asset is
    looked up as tiled will look it up, and the file it would send, resolved, must lie inside
    the store's directories (and inside the directory asset): 403 otherwise. Requests that
    tiled refuses anyway (no such node or asset, a malformed id) are left to tiled.
    """

    def __init__(self, app: Any, tree: Any) -> None:
        super().__init__(app)
        self._tree = tree

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].startswith(ASSET_ROUTES):
            refusal = await self._refusal(scope)
            if refusal is not None:
                await reply(send, 403, refusal)
                return
        await self.app(scope, receive, send)

    async def _refusal(self, scope: Any) -> str | None:
        from starlette.requests import Request
        from tiled.utils import path_from_uri

        request = Request(scope)
        route = next(r for r in ASSET_ROUTES if scope["path"].startswith(r))
        segments = [s for s in scope["path"][len(route) :].split("/") if s]
        try:
            asset_id = int(request.query_params.get("id", ""))
            entry = await self._tree.lookup_adapter(segments)
            asset = await entry.asset_by_id(asset_id)
        except Exception:  # tiled answers a missing node, a bad id, a node without assets
            return None
        if asset is None:
            return None
        storage = StoreStorage.of(self._tree.context)
        if (refusal := storage.refusal(asset.data_uri)) is not None:
            return refusal
        relative = request.query_params.get("relative_path")
        if relative is None or not asset.is_directory:
            return None  # tiled refuses a relative_path on a file
        directory = path_from_uri(asset.data_uri)
        target = directory / relative
        problem = storage.path_problem(target)
        if problem is None and not target.resolve().is_relative_to(directory.resolve()):
            problem = f"{relative!r} leaves the directory asset {str(directory)!r}"
        if problem is not None:
            return f"relative_path {relative!r}: {problem}; accepted: {storage.accepted()}"
        return None


def embedded_files_root(directory: Path, root: str | Path | None) -> Path:
    """The root of derived files for the embedded store in ``directory``: ``root``, which must
    lie inside ``DIRECTORY/files`` (the store serves nothing outside), or that directory.

    Raises
    ------
    UnsafePathError
        Naming ``root``, where it resolves to, and what is accepted; before anything is made.
    """
    files = directory / "files"
    if root is None:
        return files
    resolved = Path(root).resolve()
    if not resolved.is_relative_to(files.resolve()):
        raise UnsafePathError(
            f"root={str(root)!r} resolves to {str(resolved)!r}, outside the embedded store's "
            f"file directory {str(files)!r}: the store reads and serves only files inside it, "
            "so runs written there could not be read back. Accepted: that directory (the "
            "default, root=None) or a directory inside it"
        )
    return resolved
