"""``writers``: per data key a spec name, a pair, or a DBEP 6 ``writers_dict`` entry."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core._errors import AnalysisInputError
from ..core._values import ValueDescription, describe_numeric, is_dataframe, short_repr
from ..pairs._pairs import PairRegistry, WriterHandlerPair

#: Keys of a DBEP 6 ``writers_dict`` entry (``mimetype`` is our addition for tiled).
DBEP6_ENTRY_KEYS = frozenset({"writer", "resource", "root", "spec", "mimetype"})

ResourceFunc = Callable[..., tuple[str, dict[str, Any]]]


@dataclass(frozen=True)
class KeyWriter:
    """How one data key is written: the pair, plus DBEP 6 overrides of path, kwargs and root."""

    pair: WriterHandlerPair
    resource_func: ResourceFunc | None = None
    resource_func_kwargs: Mapping[str, Any] = field(default_factory=dict)
    root: Path | None = None

    def describe(self, value: Any) -> ValueDescription:
        return self.pair.describe(value)


def describe_any_value(value: Any) -> ValueDescription:
    """Describe a value for a writer we know nothing about: a DataFrame or a numeric array."""
    from ..pairs._table import describe_table_value

    if is_dataframe(value):
        return describe_table_value(value)
    return describe_numeric(value)


def _from_dbep6_entry(key: str, entry: Mapping[str, Any], registry: PairRegistry) -> KeyWriter:
    where = f"writers[{key!r}]"
    unknown = set(entry) - DBEP6_ENTRY_KEYS
    missing = {"writer", "spec"} - set(entry)
    if unknown or missing:
        raise AnalysisInputError(
            f"{where} has unknown keys {sorted(unknown)} and lacks {sorted(missing)}; a DBEP 6 "
            f"writers_dict entry takes {sorted(DBEP6_ENTRY_KEYS)} (writer and spec required)"
        )
    spec, writer = entry["spec"], entry["writer"]
    if not isinstance(spec, str) or not callable(writer):
        raise AnalysisInputError(
            f"{where}: 'spec' must be a string and 'writer' a writer class; got "
            f"{spec!r} and {writer!r}"
        )
    registered = registry.get(spec)
    base = registered or WriterHandlerPair(
        spec=spec,
        mimetype=entry.get("mimetype", "application/octet-stream"),
        writer=writer,
        handler=writer,  # unknown to us; readers register their own handler for this spec
        suffix="",
        describe=describe_any_value,
        resource_kwargs=lambda value, description: {},
    )
    pair = WriterHandlerPair(
        spec=spec,
        mimetype=entry.get("mimetype", base.mimetype),
        writer=writer,
        handler=base.handler,
        suffix=base.suffix,
        describe=base.describe,
        resource_kwargs=base.resource_kwargs,
        annotate=base.annotate if writer is base.writer else None,
    )
    resource = entry.get("resource") or {}
    if not isinstance(resource, Mapping) or set(resource) - {"func", "kwargs"}:
        raise AnalysisInputError(
            f"{where}['resource'] must be a mapping with 'func' and optional 'kwargs'; "
            f"got {resource!r}"
        )
    func = resource.get("func")
    if func is not None and not callable(func):
        raise AnalysisInputError(f"{where}['resource']['func'] must be callable; got {func!r}")
    root = entry.get("root")
    kwargs = resource.get("kwargs") or {}
    if not isinstance(kwargs, Mapping) or not all(isinstance(k, str) for k in kwargs):
        raise AnalysisInputError(
            f"{where}['resource']['kwargs'] must be a mapping with str keys; "
            f"got {short_repr(kwargs)}"
        )
    if root is not None and not isinstance(root, str | Path):
        raise AnalysisInputError(
            f"{where}['root'] must be a directory path; got {short_repr(root)}"
        )
    return KeyWriter(
        pair=pair,
        resource_func=func,
        resource_func_kwargs=dict(kwargs),
        root=Path(root) if root is not None else None,
    )


def normalize_writers(
    writers: Mapping[str, Any] | None, registry: PairRegistry
) -> dict[str, KeyWriter]:
    """Turn every accepted form of a ``writers`` entry into a :class:`KeyWriter`.

    Raises
    ------
    AnalysisInputError, UnknownSpecError
        Naming the key whose entry is not one of: a registered spec name, a
        :class:`WriterHandlerPair`, or a DBEP 6 ``writers_dict`` entry.
    """
    if writers is None:
        return {}
    if not isinstance(writers, Mapping):
        raise AnalysisInputError(
            f"writers must map data keys to writers; got {type(writers).__name__}"
        )
    normalized = {}
    for key, entry in writers.items():
        if not isinstance(key, str):
            raise AnalysisInputError(
                f"writers keys are data key names (str); got {short_repr(key)}"
            )
        if isinstance(entry, str):
            normalized[key] = KeyWriter(pair=registry[entry])
        elif isinstance(entry, WriterHandlerPair):
            normalized[key] = KeyWriter(pair=entry)
        elif isinstance(entry, Mapping):
            normalized[key] = _from_dbep6_entry(key, entry, registry)
        else:
            raise AnalysisInputError(
                f"writers[{key!r}] is {entry!r}; accepted: a spec name such as 'BAS_HDF5' "
                f"(registered: {sorted(registry)}), a WriterHandlerPair, or a DBEP 6 "
                "writers_dict entry {'writer', 'resource', 'root', 'spec'}"
            )
    return normalized
