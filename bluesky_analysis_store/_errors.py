"""Exceptions raised on bad input, each naming what was wrong and what is accepted."""


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
