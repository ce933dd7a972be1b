"""The writer/handler scheme of DBEP 6, as two small protocols.

A *handler* reads: it is constructed from a resource (the file path plus the resource kwargs)
and, called with datum kwargs, returns one value. A *writer* is its mirror: it is constructed from
exactly the same arguments and, called with one value, appends it and returns the datum kwargs that
read it back. The information used to retrieve is enough to write, and vice versa.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any, Protocol, Self, runtime_checkable


@runtime_checkable
class Writer(Protocol):
    """Appends values to one resource (file) and says how to read each back.

    Constructed as ``Writer(resource_path, **resource_kwargs)``, exactly like its handler.
    """

    def __call__(self, value: Any) -> dict[str, Any]:
        """Append ``value``; return the datum kwargs that make the handler return it."""
        ...

    def close(self) -> None:
        """Flush and close the file (idempotent)."""
        ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


@runtime_checkable
class Handler(Protocol):
    """Reads values back from one resource (file), in the databroker handler convention.

    Constructed as ``Handler(resource_path, **resource_kwargs)``.
    """

    def __call__(self, *args: Any, **datum_kwargs: Any) -> Any:
        """Return the value the datum kwargs point at."""
        ...

    def close(self) -> None:
        """Release the file (idempotent)."""
        ...
