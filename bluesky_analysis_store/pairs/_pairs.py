"""Writer/handler pairs and the instance-scoped registry that holds them."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

from ..core._errors import DuplicateSpecError, UnknownSpecError
from ..core._values import ValueDescription
from ._protocols import Handler, Writer

#: Entry point group through which pairs (this package's and third parties') are discovered.
PAIRS_ENTRY_POINT_GROUP = "bluesky_analysis_store.pairs"


@dataclass(frozen=True)
class WriterHandlerPair:
    """A writer and the handler that reads back what it wrote, under one spec name.

    Attributes
    ----------
    spec : str
        The resource ``spec``; also the handler's name in ``databroker.handlers``.
    mimetype : str
        The mimetype tiled serves the file with (TiledWriter's ``spec_to_mimetype``).
    writer : callable
        A class following the :class:`Writer` protocol.
    handler : callable
        A class following the :class:`Handler` protocol, which reads what ``writer`` wrote.
    suffix : str
        The file name suffix, with its dot (``".h5"``).
    describe : callable
        ``describe(value) -> ValueDescription``; raises ``UnsupportedValueError`` for a value the
        format cannot hold. Called on every value before any file is written.
    resource_kwargs : callable
        ``resource_kwargs(first_value, description) -> dict``: the resource kwargs for a key whose
        values all share ``description``. Writer and handler are both constructed from them.
    annotate : callable, optional
        ``annotate(path, attributes)`` stores string attributes (the run uid and the provenance
        JSON) inside a closed file, so a file found without its catalog still says where it
        came from. None for formats with no place for them.
    """

    spec: str
    mimetype: str
    writer: Callable[..., Writer]
    handler: Callable[..., Handler]
    suffix: str
    describe: Callable[[Any], ValueDescription]
    resource_kwargs: Callable[[Any, ValueDescription], dict[str, Any]]
    annotate: Callable[[str, Mapping[str, str]], None] | None = None


class PairRegistry(Mapping[str, WriterHandlerPair]):
    """Writer/handler pairs by spec name; a spec can be registered only once.

    Registries are plain instances: build as many as you need (one per store, one per test) instead
    of mutating a global. :meth:`from_entry_points` builds one holding every installed pair.

    Examples
    --------
    >>> registry = PairRegistry.from_entry_points()
    >>> registry["BAS_HDF5"].mimetype
    'application/x-hdf5'
    """

    def __init__(self, pairs: Iterable[WriterHandlerPair] = ()) -> None:
        self._pairs: dict[str, WriterHandlerPair] = {}
        for pair in pairs:
            self.register(pair)

    @classmethod
    def from_entry_points(cls, group: str = PAIRS_ENTRY_POINT_GROUP) -> PairRegistry:
        """Build a registry from every pair published in the entry point ``group``."""
        registry = cls()
        for entry_point in entry_points(group=group):
            pair = entry_point.load()
            if pair.spec != entry_point.name:
                raise DuplicateSpecError(
                    f"entry point {entry_point.name!r} in group {group!r} publishes a pair whose "
                    f"spec is {pair.spec!r}; the entry point name must equal the spec"
                )
            registry.register(pair)
        return registry

    def register(self, pair: WriterHandlerPair) -> None:
        """Add ``pair``.

        Raises
        ------
        DuplicateSpecError
            If a pair is already registered under ``pair.spec`` (no silent last-wins).
        """
        if pair.spec in self._pairs:
            raise DuplicateSpecError(
                f"spec {pair.spec!r} is already registered (by {self._pairs[pair.spec].writer!r}); "
                "use a different spec name or a separate PairRegistry"
            )
        self._pairs[pair.spec] = pair

    def __getitem__(self, spec: str) -> WriterHandlerPair:
        try:
            return self._pairs[spec]
        except KeyError:
            raise UnknownSpecError(
                f"unknown spec {spec!r}; registered specs: {sorted(self._pairs)}"
            ) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._pairs)

    def __len__(self) -> int:
        return len(self._pairs)

    def handler_registry(self) -> dict[str, Callable[..., Handler]]:
        """Spec → handler class, the form ``event_model.Filler`` takes."""
        return {spec: pair.handler for spec, pair in self._pairs.items()}

    def spec_to_mimetype(self) -> dict[str, str]:
        """Spec → mimetype, the form ``TiledWriter(spec_to_mimetype=...)`` takes."""
        return {spec: pair.mimetype for spec, pair in self._pairs.items()}


@functools.cache
def default_registry() -> PairRegistry:
    """The registry of every installed pair (entry points), built once and then reused.

    Pass your own :class:`PairRegistry` to ``compose_analysis_run(registry=...)`` to add pairs
    without touching this one.
    """
    return PairRegistry.from_entry_points()
