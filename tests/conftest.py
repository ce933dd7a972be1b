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
    from tiled.client import Context, from_context
    from tiled.server.app import build_app

    from bluesky_analysis_store._store import embedded_tree

    directory = tmp_path_factory.mktemp("tiled")
    tree = embedded_tree(directory)  # the embedded store's own layout, SQLite
    with Context.from_app(build_app(tree)) as context:
        yield TiledCatalog(from_context(context), directory / "files")
