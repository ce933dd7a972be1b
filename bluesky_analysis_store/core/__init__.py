"""The foundation every layer uses: typed errors, names and paths, value descriptions, document
checks, files written safely, lazy re-exports."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._lazy import lazy_exports

_EXPORTS = {
    "API_KEY_ENV": "._environment",
    "DEFAULT_STORE": "._environment",
    "IDLE_TIMEOUT_ENV": "._environment",
    "LOCAL_SERVER_ENV": "._environment",
    "READ_KEY_ENV": "._environment",
    "SPOOL_ENV": "._environment",
    "STORE_ENV": "._environment",
    "RUN_SPEC": "._names",
    "AnalysisInputError": "._errors",
    "AnalysisStoreError": "._errors",
    "DuplicateSpecError": "._errors",
    "FileCollisionError": "._errors",
    "InputTypeError": "._errors",
    "LocalServerError": "._errors",
    "NestingTooDeepError": "._errors",
    "NothingKeptError": "._errors",
    "ProtectedKeyError": "._errors",
    "ProcedureError": "._errors",
    "ProvenanceError": "._errors",
    "RunConflictError": "._errors",
    "RunNotReadableError": "._errors",
    "LineageConflictError": "._errors",
    "StorageFullError": "._errors",
    "StoreInUseError": "._errors",
    "UnknownAnalysisError": "._errors",
    "UnknownSpecError": "._errors",
    "UnsafePathError": "._errors",
    "UnsupportedValueError": "._errors",
    "WriterClosedError": "._errors",
    "ValueDescription": "._values",
}

if not TYPE_CHECKING:  # mypy reads the names from the imports below (a star import too)
    __all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:
    from ._environment import (
        API_KEY_ENV,
        DEFAULT_STORE,
        IDLE_TIMEOUT_ENV,
        LOCAL_SERVER_ENV,
        READ_KEY_ENV,
        SPOOL_ENV,
        STORE_ENV,
    )
    from ._errors import (
        AnalysisInputError,
        AnalysisStoreError,
        DuplicateSpecError,
        FileCollisionError,
        InputTypeError,
        LineageConflictError,
        LocalServerError,
        NestingTooDeepError,
        NothingKeptError,
        ProcedureError,
        ProtectedKeyError,
        ProvenanceError,
        RunConflictError,
        RunNotReadableError,
        StorageFullError,
        StoreInUseError,
        UnknownAnalysisError,
        UnknownSpecError,
        UnsafePathError,
        UnsupportedValueError,
        WriterClosedError,
    )
    from ._names import RUN_SPEC
    from ._values import ValueDescription
