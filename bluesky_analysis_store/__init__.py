"""Save derived (analysis) data into a Tiled catalog of Bluesky runs as event-model documents.

The public API is re-exported here and imported lazily, so ``import bluesky_analysis_store`` stays
cheap enough for an IPython profile that imports it at every start.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "compose_analysis_run": "._compose",
    "ComposedRun": "._compose",
    "default_registry": "._compose",
    "PairRegistry": "._pairs",
    "WriterHandlerPair": "._pairs",
    "PAIRS_ENTRY_POINT_GROUP": "._pairs",
    "Writer": "._protocols",
    "Handler": "._protocols",
    "ValueDescription": "._values",
    "HDF5Writer": "._hdf5",
    "HDF5Handler": "._hdf5",
    "HDF5_PAIR": "._hdf5",
    "NPYWriter": "._npy",
    "NPYHandler": "._npy",
    "NPY_PAIR": "._npy",
    "TIFFWriter": "._tiff",
    "TIFFHandler": "._tiff",
    "TIFF_PAIR": "._tiff",
    "TableWriter": "._table",
    "TableHandler": "._table",
    "TABLE_PAIR": "._table",
    "records_to_dataframe": "._table",
    "analysis_tiled_writer": "._tiled_writer",
    "register_tiled_consolidators": "._tiled_writer",
    "Provenance": "._provenance",
    "CodeProvenance": "._provenance",
    "EnvironmentProvenance": "._provenance",
    "ParentRun": "._provenance",
    "InputFile": "._provenance",
    "lineage_hash": "._provenance",
    "capture_provenance": "._capture",
    "capture_code": "._capture",
    "capture_environment": "._capture",
    "describe_input_file": "._capture",
    "describe_parent": "._capture",
    "ProvenancePolicy": "._policy",
    "MetadataPacket": "._samples",
    "new_sample_uuid": "._samples",
    "AnalysisStore": "._store",
    "DerivedFrom": "._queries",
    "LineageHash": "._queries",
    "ContentHash": "._queries",
    "SampleUUID": "._queries",
    "AnalysisName": "._queries",
    "AnalysisVersion": "._queries",
    "ExitStatus": "._queries",
    "ProvenanceError": "._errors",
    "AnalysisStoreError": "._errors",
    "AnalysisInputError": "._errors",
    "UnsafePathError": "._errors",
    "UnknownSpecError": "._errors",
    "DuplicateSpecError": "._errors",
    "UnsupportedValueError": "._errors",
    "RunConflictError": "._errors",
    "InputTypeError": "._errors",
    "NestingTooDeepError": "._errors",
    "ProtectedKeyError": "._errors",
    "FileCollisionError": "._errors",
    "WriterClosedError": "._errors",
    "StoreInUseError": "._errors",
    "StorageFullError": "._errors",
    "InvalidDocumentError": "._gate",
    "DocumentWriteError": "._gate",
    "content_hash": "._content",
    "check_store": "._fsck",
    "repair": "._fsck",
    "FsckReport": "._fsck",
    "LiveAnalysis": "._live",
    "CollectedRun": "._live",
    "AnalysisFailure": "._live",
    "analysis_runs_only": "._routing",
    "raw_runs_only": "._routing",
    "normalize_and_bin": "._analyses",
    "ImageProfilePeak": "._analyses",
    "AnalysisDevice": "._device",
    "analyze": "._plans",
    "install_profile": "._profile",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    try:
        module = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])


if TYPE_CHECKING:
    from ._analyses import ImageProfilePeak, normalize_and_bin
    from ._capture import (
        capture_code,
        capture_environment,
        capture_provenance,
        describe_input_file,
        describe_parent,
    )
    from ._compose import ComposedRun, compose_analysis_run, default_registry
    from ._content import content_hash
    from ._device import AnalysisDevice
    from ._errors import (
        AnalysisInputError,
        AnalysisStoreError,
        DuplicateSpecError,
        FileCollisionError,
        InputTypeError,
        NestingTooDeepError,
        ProtectedKeyError,
        ProvenanceError,
        RunConflictError,
        StorageFullError,
        StoreInUseError,
        UnknownSpecError,
        UnsafePathError,
        UnsupportedValueError,
        WriterClosedError,
    )
    from ._fsck import FsckReport, check_store, repair
    from ._hdf5 import HDF5_PAIR, HDF5Handler, HDF5Writer
    from ._live import AnalysisFailure, CollectedRun, LiveAnalysis
    from ._npy import NPY_PAIR, NPYHandler, NPYWriter
    from ._pairs import PAIRS_ENTRY_POINT_GROUP, PairRegistry, WriterHandlerPair
    from ._plans import analyze
    from ._policy import ProvenancePolicy
    from ._profile import install_profile
    from ._protocols import Handler, Writer
    from ._provenance import (
        CodeProvenance,
        EnvironmentProvenance,
        InputFile,
        ParentRun,
        Provenance,
        lineage_hash,
    )
    from ._queries import (
        AnalysisName,
        AnalysisVersion,
        ContentHash,
        DerivedFrom,
        ExitStatus,
        LineageHash,
        SampleUUID,
    )
    from ._routing import analysis_runs_only, raw_runs_only
    from ._samples import MetadataPacket, new_sample_uuid
    from ._store import AnalysisStore
    from ._table import TABLE_PAIR, TableHandler, TableWriter, records_to_dataframe
    from ._tiff import TIFF_PAIR, TIFFHandler, TIFFWriter
    from ._tiled_writer import (
        DocumentWriteError,
        InvalidDocumentError,
        analysis_tiled_writer,
        register_tiled_consolidators,
    )
    from ._values import ValueDescription
