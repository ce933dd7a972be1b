"""RELIABILITY.md from the figures the reliability tests report (``helpers.figure``).

``make reliability`` runs those tests with ``--reliability-report RELIABILITY.md``; ``make test``
prints the same table at the end of its run. test_reliability_report.py checks that every test
the committed file names still exists.
"""

from __future__ import annotations

import datetime
import platform
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

#: The areas of issue 6, in the order the file lists them: (key, heading).
AREAS = [
    ("kill points", "No half-written run looks complete: a save SIGKILLed at each step"),
    ("idempotence", "Idempotent, conflict-safe inserts"),
    ("concurrency", "Concurrent saves: 8 processes at once"),
    ("spool", "The store goes away mid-session: spool and replay"),
    ("repair", "Repair that cannot destroy: moved stores, other mount points, spools"),
    ("fuzz", "Bad input, fuzzed (hypothesis)"),
    ("path attacks", "Path attacks"),
    ("access", "Access to a served store"),
    ("provenance bypass", "Provenance bypass attempts: runs without valid provenance"),
    ("peers", "Peer document streams: what other projects' tests send a TiledWriter"),
    ("machine edges", "The edges of the machine: a full disk, a file size limit"),
]

HEADER = """# Reliability

What the reliability tests measured, filled from their own output: each row is one test (or one
parameter of it), the figures it printed once its assertions had passed, and the test that
produces them. `make reliability` regenerates this file; `make test` runs every one of these
tests and prints the same table at the end. The explanation is in
`docs/explanation/reliability.rst`.

"""


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _commit() -> str:
    """HEAD's short hash, and whether the tests ran on changes not committed yet."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10
        )
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except OSError:
        return "?"
    changed = " with uncommitted changes" if status.stdout.strip() else ""
    return (head.stdout.strip() or "?") + changed


def markdown(figures: Iterable[tuple[str, str, str, dict[str, Any]]]) -> str:
    """The whole RELIABILITY.md for ``figures`` (grouped by area, in test order)."""
    figures = list(figures)
    known = [key for key, _ in AREAS]
    unknown = sorted({area for _, area, _, _ in figures} - set(known))
    if unknown:
        raise ValueError(f"figures of unknown areas {unknown}; known: {known}")
    today = datetime.date.today().isoformat()
    lines = [
        HEADER + f"Measured {today}, commit {_commit()}, Python {platform.python_version()} on "
        f"{platform.machine()}, {len(figures)} rows.\n"
    ]
    for key, heading in AREAS:
        rows = [f for f in figures if f[1] == key]
        if not rows:
            continue
        lines.append(f"## {heading}\n")
        lines.append("| what is checked | figures | test |")
        lines.append("| --- | --- | --- |")
        for test, _, claim, values in rows:
            shown = ", ".join(f"{k}={v}" for k, v in values.items())
            lines.append(f"| {_cell(claim)} | {_cell(shown)} | `{_cell(test)}` |")
        lines.append("")
    return "\n".join(lines)


def named_tests(text: str) -> list[str]:
    """The test node ids a RELIABILITY.md names (its last column)."""
    tests = []
    for line in text.splitlines():
        if line.startswith("| ") and line.rstrip().endswith("` |"):
            tests.append(line.rstrip()[:-3].rsplit("`", 1)[1])
    return tests


def write(path: Path, figures: Iterable[tuple[str, str, str, dict[str, Any]]]) -> None:
    path.write_text(markdown(figures))
