"""Analyses as plugins: the ``bluesky_analysis_store.analyses`` entry point group and
``module:function`` references, resolved to what reprocessing runs.

An analysis is a function ``analysis(run, **parameters) -> (data_dicts, md)`` (``runs``, a list,
for a procedure over a group of runs or one that reads several procedures' outputs of each
run), or a class whose instances, built with the parameters,
are called with the run(s). Its ``name`` and ``version`` attributes (or the distribution's
version) name it in the provenance; its optional ``parameters_model``, a pydantic model, checks
its parameters (:mod:`..provenance._parameters`).
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from importlib.metadata import entry_points
from typing import Any

from ..core._errors import UnknownAnalysisError
from ..provenance._capture import capture_code
from ..provenance._provenance import CodeProvenance

#: The entry point group where packages publish analyses (ours: ``normalize_and_bin`` ...).
ANALYSES_ENTRY_POINT_GROUP = "bluesky_analysis_store.analyses"


@dataclass(frozen=True)
class AnalysisPlugin:
    """An analysis found by its reference.

    Parameters
    ----------
    reference : str
        As written: an entry point name, or ``module:qualname``.
    target : function or class
        What the reference names.
    code : CodeProvenance
        Its name, version, module, commit (recorded in every run it makes).
    """

    reference: str
    target: Any
    code: CodeProvenance

    @property
    def name(self) -> str:
        """The analysis name recorded in the provenance."""
        return self.code.name

    @property
    def version(self) -> str | None:
        """Its version, as the provenance records it."""
        return self.code.version

    def __call__(self, runs: Any | Sequence[Any], parameters: Mapping[str, Any]) -> Any:
        """Run it on one run (or a list of runs) with ``parameters``: a class is built with
        the parameters and called with the run(s); a function is called with both."""
        if inspect.isclass(self.target):
            instance: Any = self.target(**parameters)
            return instance(runs)
        return self.target(runs, **parameters)


def installed_analyses() -> dict[str, str]:
    """``{entry point name: its value}`` of every analysis published in
    :data:`ANALYSES_ENTRY_POINT_GROUP`."""
    return {ep.name: ep.value for ep in entry_points(group=ANALYSES_ENTRY_POINT_GROUP)}


def _import(reference: str) -> Any:
    module_name, _, qualname = reference.partition(":")
    target: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        target = getattr(target, part)
    return target


@cache
def find_analysis(reference: str) -> AnalysisPlugin:
    """The analysis ``reference`` names: an entry point of :data:`ANALYSES_ENTRY_POINT_GROUP`,
    or ``module:qualname`` (importable where it runs, Dask workers included).

    Raises
    ------
    UnknownAnalysisError
        Nothing of that name is installed, or the reference cannot be imported or is not
        callable; the message lists the installed analyses.
    """
    published = installed_analyses()
    location = published.get(reference, reference)
    if ":" not in location:
        raise UnknownAnalysisError(
            f"no analysis {reference!r}: not in the entry point group "
            f"{ANALYSES_ENTRY_POINT_GROUP!r} (installed: {', '.join(sorted(published)) or 'none'})"
            " and not a 'module:function' reference"
        )
    try:
        target = _import(location)
    except (ImportError, AttributeError) as error:
        raise UnknownAnalysisError(
            f"analysis {reference!r} ({location}) cannot be imported: {error}"
        ) from None
    if not callable(target):
        raise UnknownAnalysisError(
            f"analysis {reference!r} ({location}) is a {type(target).__name__}, not a function "
            "or class"
        )
    return AnalysisPlugin(reference, target, capture_code(target))
