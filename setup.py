"""Thin shim: all metadata lives in pyproject.toml (kept for tooling that expects setup.py)."""

from setuptools import setup

setup()
