"""Save derived (analysis) data into a Tiled catalog of Bluesky runs as event-model documents.

The public API is re-exported here and imported lazily, so ``import bluesky_analysis_store`` stays
cheap enough for an IPython profile that imports it at every start.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .core._lazy import lazy_exports
from .core._version import __version__

_EXPORTS = {
    "compose_analysis_run": ".compose._compose",
    "ComposedRun": ".compose._compose",
    "default_registry": ".pairs._pairs",
    "PairRegistry": ".pairs._pairs",
    "WriterHandlerPair": ".pairs._pairs",
    "PAIRS_ENTRY_POINT_GROUP": ".pairs._pairs",
    "Writer": ".pairs._protocols",
    "Handler": ".pairs._protocols",
    "ValueDescription": ".core._values",
    "HDF5Writer": ".pairs._hdf5",
    "HDF5Handler": ".pairs._hdf5",
    "HDF5_PAIR": ".pairs._hdf5",
    "NPYWriter": ".pairs._npy",
    "NPYHandler": ".pairs._npy",
    "NPY_PAIR": ".pairs._npy",
    "TIFFWriter": ".pairs._tiff",
    "TIFFHandler": ".pairs._tiff",
    "TIFF_PAIR": ".pairs._tiff",
    "TableWriter": ".pairs._table",
    "TableHandler": ".pairs._table",
    "TABLE_PAIR": ".pairs._table",
    "records_to_dataframe": ".pairs._table",
    "analysis_tiled_writer": ".insert._tiled_writer",
    "register_tiled_consolidators": ".insert._tiled_writer",
    "Provenance": ".provenance._provenance",
    "CodeProvenance": ".provenance._provenance",
    "EnvironmentProvenance": ".provenance._provenance",
    "ParentRun": ".provenance._provenance",
    "InputFile": ".provenance._provenance",
    "lineage_hash": ".provenance._provenance",
    "capture_provenance": ".provenance._capture",
    "capture_code": ".provenance._capture",
    "capture_environment": ".provenance._capture",
    "describe_input_file": ".provenance._capture",
    "describe_parent": ".provenance._capture",
    "ProvenancePolicy": ".provenance._policy",
    "MetadataPacket": ".provenance._samples",
    "new_sample_uuid": ".provenance._samples",
    "AnalysisStore": ".store._store",
    "DerivedFrom": ".store._queries",
    "LineageHash": ".store._queries",
    "ContentHash": ".store._queries",
    "SampleUUID": ".store._queries",
    "AnalysisName": ".store._queries",
    "AnalysisVersion": ".store._queries",
    "ExitStatus": ".store._queries",
    "ProvenanceError": ".core._errors",
    "AnalysisStoreError": ".core._errors",
    "AnalysisInputError": ".core._errors",
    "UnsafePathError": ".core._errors",
    "UnknownSpecError": ".core._errors",
    "DuplicateSpecError": ".core._errors",
    "UnsupportedValueError": ".core._errors",
    "RunConflictError": ".core._errors",
    "InputTypeError": ".core._errors",
    "NestingTooDeepError": ".core._errors",
    "ProtectedKeyError": ".core._errors",
    "FileCollisionError": ".core._errors",
    "WriterClosedError": ".core._errors",
    "StoreInUseError": ".core._errors",
    "StorageFullError": ".core._errors",
    "InvalidDocumentError": ".insert._gate",
    "DocumentWriteError": ".insert._gate",
    "content_hash": ".provenance._content",
    "check_store": ".store._fsck",
    "repair": ".store._fsck",
    "FsckReport": ".store._fsck",
    "LiveAnalysis": ".runengine._live",
    "CollectedRun": ".runengine._live",
    "AnalysisFailure": ".runengine._live",
    "analysis_runs_only": ".runengine._routing",
    "raw_runs_only": ".runengine._routing",
    "normalize_and_bin": ".examples._analyses",
    "ImageProfilePeak": ".examples._analyses",
    "AnalysisDevice": ".runengine._device",
    "analyze": ".runengine._plans",
    "install_profile": ".cli._profile",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)


if TYPE_CHECKING:
    from .cli._profile import install_profile
    from .compose._compose import ComposedRun, compose_analysis_run
    from .core._errors import (
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
    from .core._values import ValueDescription
    from .examples._analyses import ImageProfilePeak, normalize_and_bin
    from .insert._tiled_writer import (
        DocumentWriteError,
        InvalidDocumentError,
        analysis_tiled_writer,
        register_tiled_consolidators,
    )
    from .pairs._hdf5 import HDF5_PAIR, HDF5Handler, HDF5Writer
    from .pairs._npy import NPY_PAIR, NPYHandler, NPYWriter
    from .pairs._pairs import (
        PAIRS_ENTRY_POINT_GROUP,
        PairRegistry,
        WriterHandlerPair,
        default_registry,
    )
    from .pairs._protocols import Handler, Writer
    from .pairs._table import TABLE_PAIR, TableHandler, TableWriter, records_to_dataframe
    from .pairs._tiff import TIFF_PAIR, TIFFHandler, TIFFWriter
    from .provenance._capture import (
        capture_code,
        capture_environment,
        capture_provenance,
        describe_input_file,
        describe_parent,
    )
    from .provenance._content import content_hash
    from .provenance._policy import ProvenancePolicy
    from .provenance._provenance import (
        CodeProvenance,
        EnvironmentProvenance,
        InputFile,
        ParentRun,
        Provenance,
        lineage_hash,
    )
    from .provenance._samples import MetadataPacket, new_sample_uuid
    from .runengine._device import AnalysisDevice
    from .runengine._live import AnalysisFailure, CollectedRun, LiveAnalysis
    from .runengine._plans import analyze
    from .runengine._routing import analysis_runs_only, raw_runs_only
    from .store._fsck import FsckReport, check_store, repair
    from .store._queries import (
        AnalysisName,
        AnalysisVersion,
        ContentHash,
        DerivedFrom,
        ExitStatus,
        LineageHash,
        SampleUUID,
    )
    from .store._store import AnalysisStore
