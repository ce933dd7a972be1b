"""Shared fixtures: one real in-process tiled catalog (SQLite) per session."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest


@dataclass
class TiledCatalog:
    """A real tiled app on SQLite, with a readable file root for derived files."""

    client: Any
    files: Path

    def new_runs_container(self) -> Any:
        """A fresh ``CatalogOfBlueskyRuns`` container (so tests do not see each other's runs)."""
        from tiled.structures.core import Spec

        return self.client.create_container(
            uuid.uuid4().hex, specs=[Spec("CatalogOfBlueskyRuns", version="3.0")]
        )

    def new_root(self) -> Path:
        """A fresh directory inside tiled's readable storage."""
        root = self.files / uuid.uuid4().hex
        root.mkdir()
        return root


@pytest.fixture(scope="session")
def tiled_catalog(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TiledCatalog]:
    from tiled.catalog import from_uri
    from tiled.client import Context, from_context
    from tiled.server.app import build_app

    directory = tmp_path_factory.mktemp("tiled")
    (directory / "data").mkdir()
    files = directory / "files"
    files.mkdir()
    tree = from_uri(
        f"sqlite+aiosqlite:///{directory}/catalog.db",
        writable_storage=[str(directory / "data"), f"duckdb:///{directory}/tables.duckdb"],
        readable_storage=[str(files)],
        init_if_not_exists=True,
    )
    with Context.from_app(build_app(tree)) as context:
        yield TiledCatalog(from_context(context), files)
