"""RELIABILITY.md is made from the tests' own figures and names tests that exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import reliability

TOP = Path(__file__).resolve().parent.parent


def test_the_report_lists_each_figure_under_its_area_with_its_test():
    figures = [
        ("tests/test_a.py::test_one[x]", "spool", "claim | with a bar", {"lost": 0}),
        ("tests/test_b.py::test_two", "kill points", "another claim", {"point": "p", "n": 2}),
    ]
    text = reliability.markdown(figures)
    assert text.index("## No half-written run") < text.index("## The store goes away")
    assert "| claim \\| with a bar | lost=0 | `tests/test_a.py::test_one[x]` |" in text
    assert reliability.named_tests(text) == [figures[1][0], figures[0][0]]
    with pytest.raises(ValueError, match="no such area"):
        reliability.markdown([("t", "no such area", "c", {})])


def test_the_committed_report_names_existing_tests_of_every_area():
    text = (TOP / "RELIABILITY.md").read_text()
    for _, heading in reliability.AREAS:
        assert f"## {heading}" in text, heading
    named = reliability.named_tests(text)
    assert len(named) >= 20
    for node in named:
        path, _, name = node.partition("::")
        function = re.sub(r"\[.*\]$", "", name)
        source = (TOP / path).read_text()
        assert f"def {function}(" in source, f"RELIABILITY.md names {node}, which is gone"
