"""``bas`` as a user runs it: a real subprocess."""

import subprocess
import sys
from pathlib import Path


def _bas(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "bluesky_analysis_store.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, cwd=cwd, timeout=120)


def test_demo_composes_a_run_and_prints_a_summary(tmp_path):
    result = _bas("demo", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    (directory,) = tmp_path.glob("bas-demo-*")
    lines = result.stdout.splitlines()
    uid = lines[0].removeprefix("analysis run ")
    assert f"  root:      {directory}" in lines
    assert "  stream 'primary': mu, roi_image, roi_total" in lines
    written = sorted(str(p.relative_to(directory)) for p in directory.rglob("*.h5"))
    assert written == [f"{uid}/primary/roi_image.h5", f"{uid}/spectra/interpolated.h5"]
    assert [f"  file: {w}" for w in written] == [ln for ln in lines if ln.startswith("  file:")]


def test_demo_accepts_a_relative_directory(tmp_path):
    result = _bas("demo", "--directory", "here", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"  root:      {tmp_path / 'here'}" in result.stdout.splitlines()


def test_errors_are_one_line_without_traceback(tmp_path):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("x")
    result = _bas("demo", "--directory", str(blocker), cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.startswith("bas demo: error: ")
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    debug = _bas("--debug", "demo", "--directory", str(blocker), cwd=tmp_path)
    assert "Traceback" in debug.stderr


def test_help_lists_the_commands(tmp_path):
    result = _bas("--help", cwd=tmp_path)
    assert result.returncode == 0
    assert "demo" in result.stdout
