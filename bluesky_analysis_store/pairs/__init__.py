"""Writer/handler pairs: the protocols, the registry (entry points), and the HDF5, NPY, TIFF and
table pairs."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..core._lazy import lazy_exports

_EXPORTS = {
    "HDF5Handler": "._hdf5",
    "HDF5Writer": "._hdf5",
    "HDF5_PAIR": "._hdf5",
    "NPYHandler": "._npy",
    "NPYWriter": "._npy",
    "NPY_PAIR": "._npy",
    "PAIRS_ENTRY_POINT_GROUP": "._pairs",
    "PairRegistry": "._pairs",
    "WriterHandlerPair": "._pairs",
    "default_registry": "._pairs",
    "Handler": "._protocols",
    "Writer": "._protocols",
    "TABLE_PAIR": "._table",
    "TableHandler": "._table",
    "TableWriter": "._table",
    "records_to_dataframe": "._table",
    "TIFFHandler": "._tiff",
    "TIFFWriter": "._tiff",
    "TIFF_PAIR": "._tiff",
}

if not TYPE_CHECKING:  # mypy reads the names from the imports below (a star import too)
    __all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:
    from ._hdf5 import HDF5_PAIR, HDF5Handler, HDF5Writer
    from ._npy import NPY_PAIR, NPYHandler, NPYWriter
    from ._pairs import (
        PAIRS_ENTRY_POINT_GROUP,
        PairRegistry,
        WriterHandlerPair,
        default_registry,
    )
    from ._protocols import Handler, Writer
    from ._table import TABLE_PAIR, TableHandler, TableWriter, records_to_dataframe
    from ._tiff import TIFF_PAIR, TIFFHandler, TIFFWriter
