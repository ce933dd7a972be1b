"""The package's version (keep equal to ``version`` in pyproject.toml: a test compares them)."""

__version__ = "0.1.0"
