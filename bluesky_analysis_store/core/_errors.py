"""Exceptions raised on bad input, each naming what was wrong and what is accepted."""

from typing import Any


class AnalysisStoreError(Exception):
    """Base class of every error this package raises on purpose."""


class AnalysisInputError(AnalysisStoreError, ValueError):
    """``data_dicts``, ``md`` or ``writers`` cannot be turned into a valid run.

    Raised before anything is written.
    """


class UnsafePathError(AnalysisStoreError, ValueError):
    """A resource path would leave the root it must stay inside."""


class UnknownSpecError(AnalysisStoreError, KeyError):
    """No writer/handler pair is registered under a spec name."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class DuplicateSpecError(AnalysisStoreError, ValueError):
    """A spec name is registered twice in one registry."""


class UnsupportedValueError(AnalysisStoreError, TypeError):
    """A writer was given a value its file format cannot hold."""


class ProvenanceError(AnalysisStoreError, ValueError):
    """Provenance is missing, malformed, or does not satisfy the policy.

    Raised before anything is written.
    """


class RunConflictError(AnalysisStoreError, ValueError):
    """A document's uid already exists in the store with different content.

    Inserting a document that is already there, unchanged, is not an error (it does nothing).
    """


class LineageConflictError(RunConflictError):
    """Imported provenance contradicts what the store knows of a run (``bas import-prov``):
    another lineage hash, other parents, other code. Nothing is written.

    Attributes
    ----------
    entity : str
        The PROV entity (``bas:run/<uid>``) in conflict.
    field : str
        What differs (``"lineage_hash"``, ``"parents"``, ``"code"``, ``"kind"``).
    stored, imported : object
        The store's value and the file's.
    """

    def __init__(self, entity: str, field: str, stored: object, imported: object) -> None:
        self.entity, self.field, self.stored, self.imported = entity, field, stored, imported
        super().__init__(
            f"{entity}: the store has {field} {stored!r}, the imported provenance says "
            f"{imported!r}; nothing was imported"
        )


class InputTypeError(AnalysisInputError, TypeError):
    """An argument has a type that is not accepted (the message names what is)."""


class NestingTooDeepError(AnalysisInputError):
    """Metadata, parameters or a document nest mappings and lists deeper than the limit
    (:data:`~bluesky_analysis_store.core._values.MAX_DEPTH`); the message names the key path.

    Raised before anything is written.
    """


class ProtectedKeyError(AnalysisInputError, KeyError):
    """A protected key of a metadata packet cannot be deleted."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class FileCollisionError(AnalysisStoreError, FileExistsError):
    """A file the store would create already exists; files are never overwritten."""


class WriterClosedError(AnalysisStoreError, ValueError):
    """A value was given to a writer after it was closed."""


class StoreInUseError(AnalysisStoreError):
    """An embedded store is open in another process (or in the process this one was forked
    from); one process at a time may have it open."""


class LocalServerError(AnalysisStoreError):
    """An embedded store's local server could not be started or reached; the message names the
    server's log and what it said."""


class StorageFullError(AnalysisStoreError, OSError):
    """The file system ran out of space (``ENOSPC``), quota (``EDQUOT``) or allowed file size
    (``EFBIG``) while a save wrote its files.

    Every file of the save is closed and removed, and nothing is published or inserted.

    Attributes
    ----------
    errno : int
        The operating system's error number.
    filename : str
        The file being written.
    bytes_needed : int or None
        About how many bytes the save's files need (their values' raw size), when known.
    """

    def __init__(
        self, message: str, *, errno: int = 0, filename: str = "", bytes_needed: int | None = None
    ) -> None:
        super().__init__(message)
        self.errno = errno
        self.filename = filename
        self.bytes_needed = bytes_needed

    def __str__(self) -> str:  # OSError would format (errno, strerror) pairs
        return str(self.args[0])

    def __reduce__(self) -> tuple[Any, ...]:  # keep the attributes across processes
        state = {"errno": self.errno, "filename": self.filename}
        return (type(self), (self.args[0],), {**state, "bytes_needed": self.bytes_needed})


class NotFoundError(AnalysisStoreError, KeyError):
    """A run, stream or key asked for is not there."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class RunNotReadableError(NotFoundError):
    """The store keeps no readable form of the run asked for: a null store keeps nothing, a
    JSONL store keeps its documents only (``store.documents(uid)``; ``bas replay DIR --into
    TARGET`` puts them in a store that reads them)."""


class NothingKeptError(RunNotReadableError):
    """A run was asked of a null store (``AnalysisStore.open("null:")``), which checks every save
    and keeps nothing: there is nothing to read back."""


class AnalysisTimeoutError(AnalysisStoreError, TimeoutError):
    """Waiting for analyses to finish took longer than allowed."""


class UnreadableFileError(AnalysisStoreError, ValueError):
    """A file of the store's own (a spool file, a manifest) cannot be read as what it should be."""


class UnknownAnalysisError(AnalysisStoreError, LookupError):
    """An analysis reference names no installed analysis (entry point or ``module:function``);
    the message lists what is installed."""


class ProcedureError(AnalysisStoreError, ValueError):
    """A procedure file (``bas reprocess``) is invalid. ``problems`` lists every problem found,
    each naming the file, the procedure and the field; nothing ran."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        count = len(self.problems)
        super().__init__(
            f"{count} problem{'s' if count != 1 else ''} in the procedures; nothing ran:\n"
            + "\n".join(f"  - {problem}" for problem in self.problems)
        )
