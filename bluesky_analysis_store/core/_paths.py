"""Names that become path segments, containment of resource paths inside a root, and whether a
store target is a server's URI or a directory."""

from __future__ import annotations

import re
from pathlib import Path

from ._errors import AnalysisInputError, UnsafePathError

#: Stream names and data keys become file and tiled node names: keep them to a safe alphabet.
SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_\-]{0,127}")
SAFE_NAME_TEXT = (
    "1-128 characters from A-Z a-z 0-9 _ - (not starting with '-'); '.' and '/' are not allowed"
)


def is_server_uri(target: object) -> bool:
    """Whether a store target names a tiled server (an ``http(s)://`` URI), not a directory."""
    return isinstance(target, str) and target.startswith(("http://", "https://"))


#: The store that checks everything and keeps nothing (``AnalysisStore.open("null:")``).
NULL_STORE = "null:"
#: The prefix of a JSONL directory store's target (``jsonl:DIR``).
JSONL_PREFIX = "jsonl:"


def store_scheme(target: object) -> str | None:
    """``"null"`` for a null store's target (``null:`` or ``null:SOURCE``), ``"jsonl"`` for
    ``jsonl:DIR``, else None (a directory, a server's URI or a client)."""
    if isinstance(target, str) and target.startswith(NULL_STORE):
        return "null"
    if isinstance(target, str) and target.startswith(JSONL_PREFIX):
        return "jsonl"
    return None


def check_name(name: object, what: str) -> str:
    """Return ``name`` if it is a safe stream name or data key, else raise.

    Raises
    ------
    AnalysisInputError
        Naming ``what`` (e.g. ``"data_dicts[3]: stream 'primary' key"``) and the accepted alphabet.
    """
    if not isinstance(name, str) or not SAFE_NAME.fullmatch(name):
        raise AnalysisInputError(f"{what} {name!r} is not accepted; use {SAFE_NAME_TEXT}")
    return name


def contained_path(root: str | Path, relative: str | Path) -> Path:
    """Resolve ``root / relative`` and require it to stay inside ``root``.

    Symlinks are followed (``Path.resolve``) before the check, so a link pointing out of the root
    is refused just like ``..`` or an absolute path.

    Raises
    ------
    UnsafePathError
        If the resolved path is not inside the resolved root.
    """
    relative_text = str(relative)
    if "\\" in relative_text or "%" in relative_text:
        raise UnsafePathError(
            f"resource path {relative_text!r} contains '\\\\' or '%'; use plain POSIX relative "
            f"paths inside the root {str(root)!r}"
        )
    if Path(relative_text).is_absolute():
        raise UnsafePathError(
            f"resource path {relative_text!r} is absolute; it must be relative to the root "
            f"{str(root)!r}"
        )
    resolved_root = Path(root).resolve()
    target = (resolved_root / relative_text).resolve()
    if target == resolved_root or not target.is_relative_to(resolved_root):
        raise UnsafePathError(
            f"resource path {relative_text!r} resolves to {str(target)!r}, outside the root "
            f"{str(resolved_root)!r}; resource paths must stay inside the root"
        )
    return target
