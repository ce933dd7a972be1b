"""Sphinx configuration for the bluesky-analysis-store documentation."""

from __future__ import annotations

import sys
from pathlib import Path

# Let autodoc import the package from the repository even when it is not installed.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

project = "bluesky-analysis-store"
author = "bluesky-analysis-store developers"
copyright = "bluesky-analysis-store developers"

try:
    from bluesky_analysis_store import __version__ as release
except ImportError:  # pragma: no cover - the build still works without the package's dependencies
    release = ""
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
]

# Docstrings are numpydoc style.
napoleon_numpy_docstring = True
napoleon_google_docstring = False

autodoc_typehints = "description"
autodoc_member_order = "bysource"

nitpicky = False
exclude_patterns = ["_build"]
root_doc = "index"

html_theme = "alabaster"
html_title = "bluesky-analysis-store"
