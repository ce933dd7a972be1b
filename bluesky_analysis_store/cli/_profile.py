"""Install the IPython beamline profile whose startup files ship with this package."""

from __future__ import annotations

import os
import re
import tempfile
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path

from ..core._errors import AnalysisStoreError, FileCollisionError

#: The package directory holding the startup files (``00-base.py``, ``10-stores.py``, ...).
STARTUP_PACKAGE_DIR = "profile_startup"
_PROFILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def startup_files() -> list[Traversable]:
    """The profile's startup files as shipped with the package, in the order IPython runs them."""
    directory = files("bluesky_analysis_store") / STARTUP_PACKAGE_DIR
    return sorted(
        (entry for entry in directory.iterdir() if entry.name.endswith(".py")),
        key=lambda entry: entry.name,
    )


def _profile_directory(name: str, ipython_dir: str | os.PathLike[str] | None) -> Path:
    """Create (if needed) and return ``IPYTHONDIR/profile_NAME`` with its ``startup/``."""
    if not _PROFILE_NAME.fullmatch(name) or name.endswith("."):
        raise AnalysisStoreError(
            f"profile name {name!r} is not usable; use letters, digits, '_', '.' and '-' "
            "(e.g. 'bas' for ipython --profile=bas)"
        )
    try:
        from IPython.core.profiledir import ProfileDir
        from IPython.paths import get_ipython_dir
    except ImportError:
        raise AnalysisStoreError(
            "installing an IPython profile needs IPython: pip install ipython"
        ) from None
    base = Path(ipython_dir if ipython_dir is not None else get_ipython_dir()).expanduser()
    base.mkdir(parents=True, exist_ok=True)
    profile = ProfileDir.create_profile_dir_by_name(str(base), name)
    return Path(profile.location)


def install_profile(
    name: str = "bas", ipython_dir: str | os.PathLike[str] | None = None, *, force: bool = False
) -> Path:
    """Install the beamline profile's startup files into an IPython profile.

    The files (``00-base.py``, ``10-stores.py``, ``20-samples.py``, ``50-insert_analysis.py``,
    ``90-plans.py``) are copied into ``IPYTHONDIR/profile_NAME/startup/``; start the session
    with ``ipython --profile=NAME``. They read their settings (store, API key, ...) from
    environment variables at every start, so no key or path is written into them.

    Parameters
    ----------
    name : str
        The profile's name (``ipython --profile=NAME``).
    ipython_dir : path, optional
        IPython's directory (default: IPython's own, ``$IPYTHONDIR`` or ``~/.ipython``);
        created if missing.
    force : bool
        Overwrite startup files of the same name whose contents differ. Without it nothing is
        written when any differs (e.g. edited by hand, or from another profile). Startup files
        of other names are left alone (IPython runs them too, in name order).

    Returns
    -------
    Path
        The profile directory, ``IPYTHONDIR/profile_NAME``.

    Raises
    ------
    FileExistsError
        If a startup file of the same name differs and ``force`` is false.
    AnalysisStoreError
        If ``name`` is not a usable profile name, or IPython is not installed.
    """
    shipped = {entry.name: entry.read_bytes() for entry in startup_files()}
    profile = _profile_directory(name, ipython_dir)
    startup = profile / "startup"
    startup.mkdir(exist_ok=True)
    different = [
        startup / file_name
        for file_name, content in shipped.items()
        if (startup / file_name).exists() and (startup / file_name).read_bytes() != content
    ]
    if different and not force:
        packaged = files("bluesky_analysis_store") / STARTUP_PACKAGE_DIR / different[0].name
        raise FileCollisionError(
            f"{different[0]} exists and differs from this package's {packaged}"
            + (f" (and {len(different) - 1} more)" if len(different) > 1 else "")
            + "; compare them, then overwrite with bas profile install --force "
            "(install_profile(..., force=True))"
        )
    for file_name, content in shipped.items():
        target = startup / file_name
        if target.exists() and target.read_bytes() == content:
            continue
        # write a temporary file next to the target, then rename: never a half-written file
        fd, temporary = tempfile.mkstemp(dir=startup, prefix=f".{file_name}.", suffix=".tmp")
        try:
            os.fchmod(fd, 0o644)  # mkstemp's 0600 would hide a shared profile from colleagues
            with os.fdopen(fd, "wb") as stream:
                stream.write(content)
            os.replace(temporary, target)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
    return profile
