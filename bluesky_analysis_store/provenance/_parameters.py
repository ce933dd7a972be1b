"""An analysis' parameters, checked against what it declares: its pydantic model, or its
signature.

An analysis may declare ``parameters_model``, a pydantic model class: the parameters it is given
are validated against it and recorded as the model dumps them (defaults filled in), so the
same configuration written two ways is the same lineage. Without a model, the names are checked
against the analysis' signature (a function's keyword arguments after the run, a class's
``__init__``) and recorded as given.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ValidationError

from ..core._errors import AnalysisInputError


def parameters_model(analysis: Any) -> type[BaseModel] | None:
    """The pydantic model ``analysis`` declares for its parameters (``parameters_model``), or
    None."""
    model = getattr(analysis, "parameters_model", None)
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _accepted_names(analysis: Any) -> list[str] | None:
    """The keyword parameters ``analysis`` takes (None: any, it has ``**kwargs`` or no
    signature)."""
    target = analysis.__init__ if inspect.isclass(analysis) else analysis
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):  # a builtin or an unusual callable: cannot tell
        return None
    parameters = list(signature.parameters.values())
    if inspect.isclass(analysis):
        parameters = parameters[1:]  # self
    elif parameters and parameters[0].kind is not inspect.Parameter.KEYWORD_ONLY:
        parameters = parameters[1:]  # the run (or runs) it is called with
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    return [
        p.name
        for p in parameters
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    ]


def parameter_problems(
    analysis: Any, given: Mapping[str, Any], name: str
) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """The parameters to record for ``analysis`` called with ``given``, and every problem found
    (each ``("parameters.KEY", what is wrong)``), for a caller that gathers problems."""
    model = parameters_model(analysis)
    if model is not None:
        try:
            return model.model_validate(dict(given)).model_dump(mode="json"), []
        except ValidationError as error:
            return dict(given), [
                (
                    f"parameters.{'.'.join(map(str, e['loc'])) or '(all)'}",
                    f"{e['msg']} (got {e.get('input')!r:.60})",
                )
                for e in error.errors()
            ]
    accepted = _accepted_names(analysis)
    if accepted is None:
        return dict(given), []
    return dict(given), [
        (
            f"parameters.{key}",
            f"{name} takes no parameter {key!r}; it takes "
            f"{', '.join(repr(a) for a in accepted) or 'none'}",
        )
        for key in given
        if key not in accepted
    ]


def checked_parameters(analysis: Any, given: Mapping[str, Any] | None, name: str) -> dict[str, Any]:
    """:func:`parameter_problems`, raising :class:`AnalysisInputError` with every problem."""
    parameters, problems = parameter_problems(analysis, given or {}, name)
    if problems:
        raise AnalysisInputError(
            f"invalid parameters for {name}: "
            + "; ".join(f"{field}: {message}" for field, message in problems)
        )
    return parameters
