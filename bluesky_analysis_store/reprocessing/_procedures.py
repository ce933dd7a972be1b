"""Procedures in a configuration file (YAML), validated before anything runs.

A file lists procedures by name and may ``include`` library files of procedures (paths
relative to the including file), as Datenraffinerie's configurations do::

    name: cycle-2026-3            # the campaign (default: the file's stem)
    include: [library/xas.yaml]
    retries: 1                    # default for every procedure
    procedures:
      binned:
        analysis: normalize_and_bin   # an entry point name, or module:function
        version: "1.0"                # must match the installed analysis
        parameters: {detector: det, bins: 20}
        inputs:
          raw: {plan_name: scan, scan_id: [100, 180]}
      averaged:
        analysis: average_curves
        version: "1.0"
        inputs: {procedures: [binned]}
        per: sample                   # run (default) | sample | scan_range | all

Every problem is gathered (pydantic's and ours: unknown analyses, versions that do not match,
parameters the analysis refuses, dangling references, cycles, includes that loop or define a
procedure twice) and raised at once as :class:`ProcedureError`, each naming the file, the
procedure and the field.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from graphlib import CycleError, TopologicalSorter
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from ..core._errors import ProcedureError, UnknownAnalysisError
from ..provenance._parameters import parameter_problems
from ._analyses import AnalysisPlugin, find_analysis


def iso_timestamp(text: str) -> float:
    """Seconds since the epoch of an ISO date or time; a naive one is local time, as the
    RunEngine's ``start.time`` is (``ValueError`` if ``text`` is not ISO)."""
    return datetime.fromisoformat(text).timestamp()


def dotted_items(values: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """``(dotted key, value)`` of every leaf of nested mappings: ``{a: {b: 1}}`` is ``a.b: 1``
    (tiled compares a nested start key by its dotted path)."""
    leaves: list[tuple[str, Any]] = []
    for key, value in values.items():
        if isinstance(value, Mapping) and value:
            leaves.extend(dotted_items(value, f"{prefix}{key}."))
        else:
            leaves.append((f"{prefix}{key}", value))
    return leaves


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RawQuery(_Strict):
    """Which raw runs a procedure reads: every condition given must hold (none: every run)."""

    plan_name: str | list[str] | None = Field(None, description="Plan name(s).")
    scan_id: int | tuple[int, int] | None = Field(
        None, description="One scan id, or [first, last] (inclusive)."
    )
    since: str | None = Field(None, description="Started at or after (ISO date or time).")
    until: str | None = Field(None, description="Started before (ISO date or time).")
    sample_uuid: str | list[str] | None = Field(None, description="Sample uuid(s).")
    uids: list[str] | None = Field(None, description="These runs (full uids).")
    start: dict[str, JsonValue] = Field(
        default_factory=dict,
        description="Any other start-document key (dotted for nested keys, or nested mappings) "
        "and its value (one string, number, true/false or null).",
    )
    exit_status: str | None = Field(
        "success", description="The runs' stop exit_status (null: any, unfinished runs too)."
    )

    @field_validator("start")
    @classmethod
    def _comparable(cls, value: dict[str, JsonValue]) -> dict[str, JsonValue]:
        # tiled's server fails (500) on a list or mapping to compare with: refuse it here
        wrong = [
            f"{key}: {type(leaf).__name__} {leaf!r:.40} cannot be compared"
            for key, leaf in dotted_items(value)
            if isinstance(leaf, list | dict)
        ]
        if wrong:
            raise ValueError(
                "; ".join(wrong) + "; give one value (a string, number, true/false or null) per key"
            )
        return value

    @field_validator("since", "until")
    @classmethod
    def _iso_time(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                iso_timestamp(value)
            except ValueError:
                raise ValueError(
                    f"{value!r} is not an ISO date or time (2026-03-01 or 2026-03-01T08:00)"
                ) from None
        return value

    @model_validator(mode="after")
    def _ordered_scan_ids(self) -> RawQuery:
        if isinstance(self.scan_id, tuple) and self.scan_id[0] > self.scan_id[1]:
            raise ValueError(f"scan_id range {list(self.scan_id)} is empty: first > last")
        return self


class Inputs(_Strict):
    """A procedure's inputs: a query on the raw catalog, or other procedures' outputs."""

    raw: RawQuery | None = None
    procedures: list[str] = Field(default_factory=list, description="Procedures it reads.")

    @model_validator(mode="before")
    @classmethod
    def _one_procedure(cls, value: Any) -> Any:
        if isinstance(value, Mapping) and isinstance(value.get("procedure"), str):
            value = {**value, "procedures": [value["procedure"]]}
            del value["procedure"]
        return value

    @model_validator(mode="after")
    def _exactly_one(self) -> Inputs:
        if (self.raw is None) == (not self.procedures):
            raise ValueError("give exactly one of 'raw' (a query) or 'procedures' (names)")
        return self


class Loose(_Strict):
    """What a stored run may differ in and still be reused (strax's ``fuzzy_for``)."""

    versions: list[str] = Field(
        default_factory=list, description="Analyses (names) whose version is ignored."
    )
    parameters: list[str] = Field(
        default_factory=list, description="Parameter names whose values are ignored."
    )


class Procedure(_Strict):
    """One analysis over its inputs, once per run or once per group of them."""

    analysis: str = Field(min_length=1)
    version: str = Field(min_length=1, description="Must match the installed analysis.")
    parameters: dict[str, JsonValue] = Field(default_factory=dict)
    inputs: Inputs
    per: Literal["run", "sample", "scan_range", "all"] = "run"
    scan_range: int | None = Field(
        None, gt=0, validate_default=True, description="Scans per group (per: scan_range)."
    )
    loose: Loose = Field(default_factory=Loose)
    retries: int | None = Field(None, ge=0, description="Default: the file's.")

    @field_validator("version", mode="before")
    @classmethod
    def _version_in_quotes(cls, value: Any) -> Any:
        # YAML reads 1.10 as the number 1.1: a version written unquoted may not be the one meant
        if isinstance(value, int | float) and not isinstance(value, bool):
            raise ValueError(
                f'YAML read {value!r} as a number; write the version in quotes (version: "...")'
            )
        return value

    @field_validator("scan_range")
    @classmethod
    def _range_size(cls, value: int | None, info: ValidationInfo) -> int | None:
        # a field validator (not the model's), so that the problem names the field
        per = info.data.get("per")
        if per is not None and (per == "scan_range") != (value is not None):
            raise ValueError("scan_range (scans per group) is given with per: scan_range only")
        return value


class ProcedureFile(_Strict):
    """One file: its name, includes, defaults and procedures."""

    name: str | None = None
    include: list[str] = Field(default_factory=list)
    retries: int = Field(0, ge=0)
    #: validated one by one (:class:`Procedure`), so one bad procedure hides no other's problems
    procedures: dict[str, dict[str, Any]] = Field(default_factory=dict)


@dataclass(frozen=True)
class ResolvedProcedure:
    """A valid procedure with what it resolved to.

    Parameters
    ----------
    name : str
    file : Path
        Where it is defined.
    spec : Procedure
    analysis : AnalysisPlugin
    parameters : dict
        As recorded (checked; with a parameters model's defaults).
    retries : int
    """

    name: str
    file: Path
    spec: Procedure
    analysis: AnalysisPlugin
    parameters: dict[str, Any]
    retries: int

    @property
    def upstream(self) -> list[str]:
        """The procedures whose outputs it reads."""
        return list(self.spec.inputs.procedures)


@dataclass(frozen=True)
class Campaign:
    """Valid procedures, each after the procedures it reads."""

    name: str
    file: Path
    procedures: dict[str, ResolvedProcedure]


def _messages(error: ValidationError) -> list[tuple[str, str]]:
    """``(field, message)`` of each of pydantic's errors, without its "Value error, "."""
    return [
        (".".join(str(part) for part in e["loc"]), e["msg"].removeprefix("Value error, "))
        for e in error.errors()
    ]


def _problem(file: Path, procedure: str | None, field: str, message: str) -> str:
    where = f"procedure {procedure!r}: " if procedure else ""
    return f"{file}: {where}{field}: {message}"


def _load_yaml(text: str) -> Any:
    """``yaml.safe_load``, but a key given twice in one mapping is an error (PyYAML keeps the
    last silently: a procedure pasted twice under one name would hide the first)."""
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        def construct_mapping(self, node: Any, deep: bool = False) -> dict[Any, Any]:
            seen: set[Any] = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        "while reading a mapping",
                        node.start_mark,
                        f"found the key {key!r} twice",
                        key_node.start_mark,
                    )
                seen.add(key)
            return super().construct_mapping(node, deep=deep)

    return yaml.load(text, Loader=UniqueKeyLoader)  # a SafeLoader: builds no Python objects


def _read_file(path: Path, problems: list[str]) -> ProcedureFile | None:
    import yaml

    try:
        content = _load_yaml(path.read_text())
    except OSError as error:
        problems.append(f"{path}: cannot read: {error.strerror or error}")
        return None
    except yaml.YAMLError as error:
        problems.append(f"{path}: not valid YAML: {error}")
        return None
    try:
        return ProcedureFile.model_validate(content if content is not None else {})
    except ValidationError as error:
        problems.extend(_problem(path, None, f or "(file)", m) for f, m in _messages(error))
        return None


def _procedure(
    path: Path, name: str, content: dict[str, Any], problems: list[str]
) -> Procedure | None:
    try:
        return Procedure.model_validate(content)
    except ValidationError as error:
        problems.extend(_problem(path, name, f or "(procedure)", m) for f, m in _messages(error))
        return None


def _read_all(
    path: Path, problems: list[str], seen: list[Path]
) -> tuple[ProcedureFile | None, dict[str, tuple[Path, Procedure | None, int]]]:
    """The file at ``path`` and every procedure it and its includes define, with the file
    defining each and its default retries (None for a procedure that is invalid: its problems
    are in ``problems``)."""
    path = path.resolve()
    if path in seen:
        chain = " includes ".join(str(p) for p in [*seen[seen.index(path) :], path])
        problems.append(f"{seen[-1]}: include: the includes loop: {chain}")
        return None, {}
    main = _read_file(path, problems)
    if main is None:
        return None, {}
    found: dict[str, tuple[Path, Procedure | None, int]] = {}
    for name, content in main.procedures.items():
        found[name] = (path, _procedure(path, name, content, problems), main.retries)
    for include in main.include:
        _, included = _read_all(path.parent / include, problems, [*seen, path])
        for name, entry in included.items():
            if name in found:
                problems.append(
                    _problem(
                        entry[0],
                        name,
                        "(procedure)",
                        f"defined twice: also in {found[name][0]} (names are unique across "
                        "included files)",
                    )
                )
            else:
                found[name] = entry
    return main, found


def _resolve(
    name: str, file: Path, spec: Procedure, retries: int, problems: list[str]
) -> ResolvedProcedure | None:
    try:
        analysis = find_analysis(spec.analysis)
    except UnknownAnalysisError as error:
        problems.append(_problem(file, name, "analysis", str(error)))
        return None
    ok = True
    if analysis.version != spec.version:
        problems.append(
            _problem(
                file,
                name,
                "version",
                f"the procedure asks for {analysis.name} version {spec.version!r}; the "
                f"installed one is {analysis.version!r} (write that version to run it)",
            )
        )
        ok = False
    parameters, wrong = parameter_problems(analysis.target, spec.parameters, analysis.name)
    problems.extend(_problem(file, name, field, message) for field, message in wrong)
    if not ok or wrong:
        return None
    retries = spec.retries if spec.retries is not None else retries
    return ResolvedProcedure(name, file, spec, analysis, parameters, retries)


def load_campaign(path: str | Path) -> Campaign:
    """Read, include, validate and order the procedures of the file at ``path``.

    Raises
    ------
    ProcedureError
        With every problem found; nothing has run.
    """
    path = Path(path)
    problems: list[str] = []
    main, found = _read_all(path, problems, [])
    if main is not None and not found:
        problems.append(f"{path.resolve()}: procedures: none defined (here or in its includes)")
    resolved: dict[str, ResolvedProcedure] = {}
    specs = {name: (file, spec) for name, (file, spec, _) in found.items() if spec is not None}
    for name, (file, spec, retries) in found.items():
        if spec is None:
            continue
        for upstream in spec.inputs.procedures:
            if upstream not in found:
                problems.append(
                    _problem(
                        file,
                        name,
                        "inputs.procedures",
                        f"no procedure {upstream!r} (defined: {', '.join(sorted(found))})",
                    )
                )
        if (procedure := _resolve(name, file, spec, retries, problems)) is not None:
            resolved[name] = procedure
    graph = {name: set(spec.inputs.procedures) & set(specs) for name, (_, spec) in specs.items()}
    try:
        order = list(TopologicalSorter(graph).static_order())
    except CycleError as error:
        cycle = error.args[1]
        problems.append(
            _problem(
                specs[cycle[0]][0],
                cycle[0],
                "inputs.procedures",
                f"the procedures form a cycle: {' -> '.join(reversed(cycle))}",
            )
        )
        order = list(found)
    if problems or main is None:
        raise ProcedureError(problems)
    return Campaign(
        name=main.name or path.stem,
        file=path.resolve(),
        procedures={name: resolved[name] for name in order},
    )
