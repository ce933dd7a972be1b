"""``bas``: the command line of bluesky-analysis-store."""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path


def _demo(args: argparse.Namespace) -> int:
    from ._demo import run_demo, summarize

    result = run_demo(args.directory)
    try:
        print(summarize(result))
    finally:
        result.store.close()
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``bas`` argument parser (one sub-command per task)."""
    parser = argparse.ArgumentParser(
        prog="bas", description="Save and find derived (analysis) data in a Bluesky analysis store."
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = commands.add_parser(
        "demo",
        help="simulate a beamline session (ophyd.sim, RunEngine), run two chained analyses, "
        "store them with provenance in an embedded store, and show what a user would check",
    )
    demo.add_argument(
        "--directory",
        type=Path,
        default=None,
        help="where files go (default: a new bas-demo-* directory in the current one)",
    )
    demo.set_defaults(func=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``bas``; errors print as one line and exit non-zero (``--debug`` for a traceback)."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except Exception as error:
        if args.debug:
            traceback.print_exc()
        else:
            print(f"bas {args.command}: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
