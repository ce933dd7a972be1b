"""Provenance enforcement: what a run must record before it can be composed or stored."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ..core._errors import ProvenanceError
from ..core._values import check_depth, find_in_tree
from ._capture import sha256_file
from ._provenance import PARAMETERS_DEPTH, Provenance


@dataclass(frozen=True)
class ProvenancePolicy:
    """The rules a run's provenance must satisfy; recorded in every start document it admits.

    The default requires the code's name and version and at least one parent uid or input file,
    and re-checks every input file's checksum. A facility can require more; requiring less must
    be said out loud with :meth:`relaxed`, and the reason travels with the run.

    Parameters
    ----------
    require_version : bool
        The code version must be known.
    require_parents_or_inputs : bool
        At least one parent run or one input file.
    require_clean_commit : bool
        The code must come from a git checkout without local changes.
    require_parameters : bool
        The analysis parameters must be recorded (non-empty).
    verify_inputs : bool
        Input files must exist with the recorded size and SHA-256 at save time.
    relaxed_because : str or None
        Why this policy is weaker than the default (set by :meth:`relaxed`).
    """

    require_version: bool = True
    require_parents_or_inputs: bool = True
    require_clean_commit: bool = False
    require_parameters: bool = False
    verify_inputs: bool = True
    relaxed_because: str | None = None

    @classmethod
    def strict(cls) -> ProvenancePolicy:
        """Everything required: version, parents or inputs, clean commit, parameters."""
        return cls(require_clean_commit=True, require_parameters=True)

    @classmethod
    def relaxed(cls, reason: str, **rules: bool) -> ProvenancePolicy:
        """A policy weaker than the default, with the reason recorded in each run it admits.

        Examples
        --------
        >>> policy = ProvenancePolicy.relaxed("simulated data", require_parents_or_inputs=False)
        >>> policy.relaxed_because
        'simulated data'
        """
        if not reason or not reason.strip():
            raise ProvenanceError("a relaxed provenance policy needs a non-empty reason")
        return cls(relaxed_because=reason, **rules)

    def __post_init__(self) -> None:
        weaker = not (
            self.require_version and self.require_parents_or_inputs and self.verify_inputs
        )
        if weaker and not self.relaxed_because:
            raise ProvenanceError(
                "this policy requires less than the default; build it with "
                "ProvenancePolicy.relaxed(reason, ...) so the reason is recorded with each run"
            )

    def problems(self, provenance: Provenance) -> list[str]:
        """Everything ``provenance`` lacks under this policy (empty when it complies)."""
        problems = []
        code = provenance.code
        if self.require_version and not code.version:
            problems.append(
                f"code.version is missing for {code.name!r}: give the analysis a `version` "
                "attribute, install it as a package, or pass version= to capture_provenance"
            )
        if self.require_parents_or_inputs and not (provenance.parents or provenance.inputs):
            problems.append(
                "neither parents nor inputs are recorded: pass parents=[raw run uids] or "
                "inputs=[files read] to capture_provenance"
            )
        if self.require_clean_commit and (code.commit is None or code.dirty):
            state = "not in a git checkout" if code.commit is None else "has uncommitted changes"
            problems.append(f"code {code.name!r} {state}; this policy requires a clean commit")
        if self.require_parameters and not provenance.parameters:
            problems.append("parameters are empty; this policy requires the analysis parameters")
        if self.verify_inputs:
            problems.extend(_input_file_problems(provenance))
        return problems

    def as_metadata(self) -> dict[str, Any]:
        """The policy as recorded in the start document."""
        return asdict(self)


def _input_file_problems(provenance: Provenance) -> list[str]:
    problems = []
    for item in provenance.inputs:
        path = Path(item.path)
        if not path.is_file():
            problems.append(f"input file {item.path!r} does not exist (or is not a file)")
        elif path.stat().st_size != item.size or sha256_file(path) != item.sha256:
            problems.append(
                f"input file {item.path!r} changed since it was recorded: its size or SHA-256 "
                f"no longer matches {item.sha256[:12]}…; capture provenance again"
            )
    return problems


def _check_parameters_are_json(parameters: Any) -> None:
    """Refuse NaN and infinity anywhere in the parameters (JSON cannot carry them), and
    parameters nested too deep for the start document."""
    found: list[float] = []

    def not_finite(value: Any) -> bool:
        if isinstance(value, float) and not math.isfinite(value):
            found.append(value)
            return True
        return False

    where = find_in_tree(parameters, "parameters", leaf=not_finite, above=PARAMETERS_DEPTH)
    if where is not None:
        raise ProvenanceError(
            f"provenance {where} = {found[0]!r} is not finite; JSON (and so the lineage hash) "
            "cannot carry NaN or infinity: record it as null or a string"
        )


def enforce_provenance(provenance: Any, policy: ProvenancePolicy) -> Provenance:
    """Validate ``provenance`` (a :class:`Provenance` or its JSON form) against ``policy``.

    Raises
    ------
    ProvenanceError
        When it is missing, malformed, or does not satisfy the policy; the message lists
        every problem and how to fix it.
    NestingTooDeepError
        When its parameters nest deeper than a start document allows.
    """
    if provenance is None:
        raise ProvenanceError(
            "provenance is required: build it with capture_provenance(analysis, "
            "parents=[...], inputs=[...], parameters={...})"
        )
    if not isinstance(provenance, Provenance):
        if not isinstance(provenance, Mapping):
            raise ProvenanceError(
                f"provenance must be a Provenance or its JSON form; got {type(provenance).__name__}"
            )
        check_depth(provenance, "provenance", above=PARAMETERS_DEPTH - 1)  # before pydantic
        try:
            provenance = Provenance.model_validate(provenance)
        except ValidationError as error:
            details = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or '(root)'}: {e['msg']}" for e in error.errors()
            )
            raise ProvenanceError(f"provenance is malformed: {details}") from None
    _check_parameters_are_json(provenance.parameters)
    problems = policy.problems(provenance)
    if problems:
        raise ProvenanceError("provenance does not satisfy the policy: " + "; ".join(problems))
    return provenance
