"""Fill provenance automatically: code, environment, parents and input files."""

from __future__ import annotations

import functools
import getpass
import hashlib
import inspect
import os
import platform
import re
import socket
import subprocess
import sys
from collections.abc import Iterable, Mapping
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any

from pydantic import ValidationError

from ..core._errors import InputTypeError, ProvenanceError
from ..core._values import check_depth, short_repr
from ._provenance import (
    PARAMETERS_DEPTH,
    UID_PATTERN,
    CodeProvenance,
    EnvironmentProvenance,
    InputFile,
    ParentRun,
    Provenance,
)

#: Packages whose versions every run records (those installed).
KEY_PACKAGES = (
    "bluesky-analysis-store",
    "event-model",
    "bluesky",
    "ophyd",
    "tiled",
    "bluesky-tiled-plugins",
    "databroker",
    "numpy",
    "h5py",
    "pandas",
)


def sha256_file(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file, read in blocks (a multi-GB file never sits in memory)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def describe_input_file(path: str | os.PathLike[str]) -> InputFile:
    """Path (absolute), size, SHA-256 and modification time of an input file."""
    resolved = Path(path).resolve()
    if not resolved.is_file():
        raise ProvenanceError(f"input file {str(path)!r} does not exist (or is not a file)")
    stat = resolved.stat()
    return InputFile(
        path=str(resolved), size=stat.st_size, sha256=sha256_file(resolved), mtime=stat.st_mtime
    )


def _git(directory: Path, *args: str) -> str | None:
    try:
        result = subprocess.run(
            ["git", *args], cwd=directory, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def git_state(path: str | os.PathLike[str]) -> tuple[str | None, bool | None]:
    """``(commit, dirty)`` of the git checkout holding ``path``, or ``(None, None)``.

    ``(None, None)`` also when the checkout does not track ``path`` (untracked or ignored, such as
    a virtual environment inside a project): no commit holds that code. Dirty means tracked files
    differ from the commit (untracked files elsewhere in the checkout do not count).
    """
    resolved = Path(path).resolve()
    directory = resolved if resolved.is_dir() else resolved.parent
    commit = _git(directory, "rev-parse", "HEAD")
    if commit is None:
        return None, None
    if (
        not resolved.is_dir()
        and _git(directory, "ls-files", "--error-unmatch", resolved.name) is None
    ):
        return None, None
    status = _git(directory, "status", "--porcelain", "--untracked-files=no")
    return commit, bool(status)


def _search_path_state() -> tuple[tuple[str, int | None], ...]:
    """Each ``sys.path`` entry and its modification time.

    Installing, upgrading or removing a distribution adds or removes its ``.dist-info``
    directory, which changes the modification time of the directory holding it (the same
    signal ``importlib.metadata`` caches its own directory listings by).
    """
    state = []
    for entry in sys.path:
        try:
            mtime: int | None = os.stat(entry or ".").st_mtime_ns
        except OSError:
            mtime = None
        state.append((entry, mtime))
    return tuple(state)


@functools.lru_cache(maxsize=1)
def _packages_distributions(
    search_path_state: tuple[tuple[str, int | None], ...],
) -> Mapping[str, list[str]]:
    """Top-level package → distributions, scanned once per state of ``sys.path``.

    The scan reads every installed distribution's file list (80 ms and more); a module that
    no distribution provides (a script's or a notebook's ``__main__``) would pay it on every
    capture. Keyed by :func:`_search_path_state`, a distribution installed while the process
    runs is seen by the next capture, which scans again.
    """
    return metadata.packages_distributions()


def _distribution(module_name: str) -> str | None:
    top = module_name.partition(".")[0]
    try:  # the common case, a distribution named like its package, without a full scan
        return metadata.distribution(top).metadata["Name"]
    except metadata.PackageNotFoundError:
        pass
    names = _packages_distributions(_search_path_state()).get(top)
    return names[0] if names else None


def _project_url(distribution: str | None) -> str | None:
    if distribution is None:
        return None
    meta = metadata.metadata(distribution)
    for entry in meta.get_all("Project-URL") or []:
        label, _, url = entry.partition(",")
        if label.strip().lower() in {"source", "repository", "homepage", "documentation"}:
            return url.strip()
    return (meta.get_all("Home-page") or [None])[0]


def _text_attribute(owner: Any, attribute: str) -> str | None:
    """``owner.attribute`` when it is a plain string (not a property object on a class)."""
    value = getattr(owner, attribute, None)
    return value if isinstance(value, str) and value else None


def capture_code(
    analysis: Any, *, name: str | None = None, version: str | None = None
) -> CodeProvenance:
    """Describe the code of ``analysis`` (a function, a class or instance, or a module).

    The name is ``name``, else ``analysis.name``, else its ``__name__``. The version is
    ``version``, else ``analysis.version`` / ``__version__``, else the version of the installed
    distribution that provides its module. The commit and dirty flag come from the git checkout
    holding its source file; the URL from the distribution's metadata.
    """
    target: Any
    if isinstance(analysis, ModuleType) or inspect.isroutine(analysis) or inspect.isclass(analysis):
        target = analysis
    else:  # an instance: describe its class
        target = type(analysis)
    module_name = target.__name__ if isinstance(target, ModuleType) else target.__module__
    module = sys.modules.get(module_name)
    # Looked up only when needed: an unusual module name costs a scan of every distribution.
    distribution = functools.cache(lambda: _distribution(module_name))
    name = name or _text_attribute(analysis, "name") or getattr(target, "__name__", None)
    version = (
        version
        or _text_attribute(analysis, "version")
        or _text_attribute(analysis, "__version__")
        or _text_attribute(module, "__version__")
        or (metadata.version(dist) if (dist := distribution()) else None)
    )
    try:
        source = inspect.getsourcefile(target)
    except TypeError:  # built-in
        source = None
    commit, dirty = git_state(source) if source else (None, None)
    return CodeProvenance(
        name=str(name),
        version=None if version is None else str(version),
        module=module_name,
        qualname=None if isinstance(target, ModuleType) else target.__qualname__,
        commit=commit,
        dirty=dirty,
        url=_text_attribute(analysis, "url") or _project_url(distribution()),
    )


def capture_environment() -> EnvironmentProvenance:
    """Python, platform, host, user and the versions of :data:`KEY_PACKAGES` installed."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (some containers)
        user = str(os.getuid())
    return EnvironmentProvenance(
        python=platform.python_version(),
        platform=platform.platform(),
        host=socket.gethostname(),
        user=user,
        packages=dict(_key_package_versions(_search_path_state())),
    )


@functools.lru_cache(maxsize=1)
def _key_package_versions(
    search_path_state: tuple[tuple[str, int | None], ...],
) -> tuple[tuple[str, str], ...]:
    """``(name, version)`` of each of :data:`KEY_PACKAGES` installed, read once per state of
    ``sys.path`` (as :func:`_packages_distributions`: installing, upgrading or removing one
    changes the modification time of the directory holding its ``.dist-info``, and the next
    capture reads them again). Reading ten distributions' metadata costs ~7 ms a capture."""
    packages = []
    for package in KEY_PACKAGES:
        try:
            packages.append((package, metadata.version(package)))
        except metadata.PackageNotFoundError:
            continue
    return tuple(packages)


def describe_parent(parent: Any, catalog: str | None = None) -> ParentRun:
    """A parent from a uid string, a start document, or a run (anything with ``.metadata``)."""
    start: Mapping[str, Any] | None = None
    if isinstance(parent, ParentRun):
        return parent
    if isinstance(parent, str):
        start = {"uid": parent}
    elif isinstance(getattr(parent, "metadata", None), Mapping):  # a tiled/databroker run
        start = parent.metadata.get("start")
    elif isinstance(parent, Mapping):  # a start document, or {"start": ...}
        start = parent.get("start", parent)
    if not start or "uid" not in start:
        raise InputTypeError(
            f"cannot find a run uid in {short_repr(parent)}; give a uid string, a start "
            "document, or a run with .metadata['start']"
        )
    uid = start["uid"]
    if not isinstance(uid, str) or not re.fullmatch(UID_PATTERN, uid):
        raise ProvenanceError(
            f"parent uid {uid!r} does not look like a run uid; expected a UUID such as "
            "'0f3c5a8e-9b1d-4c2e-8a7f-1d2e3f4a5b6c'"
        )
    try:
        return ParentRun(uid=uid, catalog=catalog, lineage_hash=start.get("lineage_hash"))
    except ValidationError as error:
        raise ProvenanceError(f"parent {uid!r}: {error.errors()[0]['msg']}") from None


def capture_provenance(
    analysis: Any,
    *,
    parents: Iterable[Any] = (),
    inputs: Iterable[str | os.PathLike[str]] = (),
    parameters: Mapping[str, Any] | None = None,
    catalog: str | None = None,
    name: str | None = None,
    version: str | None = None,
) -> Provenance:
    """Provenance for one run of ``analysis``, filled automatically where possible.

    Parameters
    ----------
    analysis : function, class, instance or module
        The analysis; see :func:`capture_code` for how name, version and commit are found.
    parents : iterable
        The runs the analysis read: uid strings, start documents, or runs (tiled/databroker
        clients with ``.metadata['start']``). An analysis parent's lineage hash is recorded.
    inputs : iterable of paths
        Files the analysis read; each is hashed (SHA-256, streamed).
    parameters : mapping, optional
        The analysis' configuration (JSON-safe values).
    catalog : str, optional
        Where the parents live (a URI or a name), recorded with each parent.
    name, version : str, optional
        Override what is found on ``analysis``.

    Returns
    -------
    Provenance

    Raises
    ------
    NestingTooDeepError
        If ``parameters`` nest deeper than the start document allows (they sit two levels
        down in it, under ``provenance``).
    """
    parameters = dict(parameters or {})
    check_depth(parameters, "parameters", above=PARAMETERS_DEPTH)
    return Provenance(
        code=capture_code(analysis, name=name, version=version),
        environment=capture_environment(),
        parents=tuple(describe_parent(p, catalog) for p in parents),
        inputs=tuple(describe_input_file(path) for path in inputs),
        parameters=parameters,
    )
