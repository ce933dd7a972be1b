"""Glue to bluesky-tiled-plugins' ``TiledWriter``: our mimetypes and a ready-made writer.

Imported lazily: ``bluesky_tiled_plugins.writing`` costs over a second to import.
"""

from __future__ import annotations

from typing import Any, ClassVar

from ._pairs import PairRegistry

#: Single-file mimetypes of our pairs whose tiled adapters take one ``data_uri``.
SINGLE_FILE_MIMETYPES = ("image/tiff", "application/x-npy")


def _single_file_consolidator_class() -> type:
    from bluesky_tiled_plugins.writing.consolidators import ConsolidatorBase
    from tiled.structures.data_source import Asset

    class SingleFileConsolidator(ConsolidatorBase):
        """One file holds the whole stack; tiled's TiffAdapter/NPYAdapter read it as one block.

        The base class registers its asset as an item of ``data_uris`` (a file sequence); the
        single-file adapters take ``data_uri`` instead.
        """

        supported_mimetypes: ClassVar[set[str]] = set(SINGLE_FILE_MIMETYPES)

        def __init__(self, stream_resource: Any, descriptor: Any) -> None:
            super().__init__(stream_resource, descriptor)
            self.assets = [
                Asset(data_uri=self.uri, is_directory=False, parameter="data_uri", num=None)
            ]

    return SingleFileConsolidator


def register_tiled_consolidators() -> None:
    """Teach TiledWriter our single-file mimetypes (idempotent, add-only).

    ``CONSOLIDATOR_REGISTRY`` is bluesky-tiled-plugins' documented extension point for new
    mimetypes. An entry that someone else registered for the same mimetype is left alone and
    reported, never replaced.

    Raises
    ------
    RuntimeError
        If another consolidator already handles one of ``SINGLE_FILE_MIMETYPES``.
    """
    from bluesky_tiled_plugins.writing.consolidators import CONSOLIDATOR_REGISTRY

    consolidator = None
    for mimetype in SINGLE_FILE_MIMETYPES:
        existing = dict(CONSOLIDATOR_REGISTRY).get(mimetype)
        if existing is not None:
            if existing.__name__ != "SingleFileConsolidator":
                raise RuntimeError(
                    f"TiledWriter already has consolidator {existing!r} for {mimetype!r}; "
                    "bluesky-analysis-store's TIFF/NPY pairs need its single-file consolidator"
                )
            continue
        consolidator = consolidator or _single_file_consolidator_class()
        CONSOLIDATOR_REGISTRY[mimetype] = consolidator


def analysis_tiled_writer(
    container: Any, registry: PairRegistry | None = None, **kwargs: Any
) -> Any:
    """A ``TiledWriter`` on ``container`` that understands every pair in ``registry``.

    Parameters
    ----------
    container : tiled container client
        Where runs are written (ideally a ``CatalogOfBlueskyRuns`` container).
    registry : PairRegistry, optional
        Its specs are mapped to mimetypes; default: every installed pair.
    **kwargs
        Passed to ``TiledWriter`` (``batch_size``, ``patches``, ...).
    """
    from bluesky_tiled_plugins.writing.tiled_writer import TiledWriter

    from ._compose import default_registry

    register_tiled_consolidators()
    registry = registry if registry is not None else default_registry()
    spec_to_mimetype = {**registry.spec_to_mimetype(), **kwargs.pop("spec_to_mimetype", {})}
    return TiledWriter(container, spec_to_mimetype=spec_to_mimetype, **kwargs)
