"""``bas export`` and ``bas import-prov``: provenance that travels (see :mod:`..exchange`).

Every argument is checked before the store is opened, and an output is created exclusively:
a bad format, a destination that exists, a missing SciCat field write nothing.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..core._errors import AnalysisInputError, FileCollisionError
from ..core._names import DEFAULT_PID_TEMPLATE

#: ``bas export --format``: what each writes.
FORMATS = {
    "prov-json": "W3C PROV-JSON (to FILE, default stdout)",
    "ro-crate": "an RO-Crate (Process Run Crate) into DIR, new or empty",
    "scicat": "a SciCat derived dataset and its OrigDatablock as JSON (to FILE, default stdout)",
}


class _FormatAndDestination(argparse.Action):
    """``--format FORMAT [DEST]``: the format, and the destination may follow it
    (``--format ro-crate DIR``), as it may follow the uid or ``-o``."""

    def __call__(
        self, parser: argparse.ArgumentParser, namespace: Any, values: Any, option: Any = None
    ) -> None:
        if len(values) > 2:
            parser.error(f"--format takes a format and at most one destination, not {values}")
        namespace.format = values[0]
        namespace.format_destination = values[1] if len(values) == 2 else None


def _destination(args: argparse.Namespace) -> Path | None:
    given = [
        d
        for d in (args.destination, getattr(args, "format_destination", None), args.output)
        if d is not None
    ]
    if len(given) > 1:
        raise AnalysisInputError(
            "give the destination once: after the uid, after --format FORMAT, or -o/--output; "
            f"not {len(given)} of them ({', '.join(given)})"
        )
    return Path(given[0]) if given else None


def _check(args: argparse.Namespace) -> Path | None:
    """The destination, after every check that needs no store."""
    if args.format not in FORMATS:
        raise AnalysisInputError(
            f"unknown export format {args.format!r}; choose one of {', '.join(FORMATS)}"
        )
    destination = _destination(args)
    if args.format == "ro-crate":
        from ..exchange._rocrate import check_crate_directory

        if destination is None:
            raise AnalysisInputError("--format ro-crate needs a directory: bas export UID DIR")
        return check_crate_directory(destination)
    if args.format == "scicat" and not (args.owner_group and args.contact_email):
        raise AnalysisInputError(
            "--format scicat needs --owner-group and --contact-email (SciCat requires both)"
        )
    if destination is not None and os.path.lexists(destination):
        raise FileCollisionError(f"{destination} exists; exports never overwrite a file")
    return destination


def _write_text(text: str, destination: Path | None) -> None:
    if destination is None:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
        return
    from ..core._files import open_new_file

    with open_new_file(destination) as file:  # exclusive: nothing overwritten
        file.write(text.encode("utf-8"))
    print(f"wrote {destination}", file=sys.stderr)


def export_command(args: argparse.Namespace, open_store: Callable[..., Any]) -> int:
    """``bas export``."""
    destination = _check(args)
    with open_store(args, read_only=True) as store:
        if args.format == "prov-json":
            from ..exchange._prov import export_prov

            document = export_prov(store, args.uid, recursive=args.recursive)
            _write_text(document.serialize(format="json", indent=2) or "", destination)
        elif args.format == "ro-crate":
            from ..exchange._rocrate import export_ro_crate

            assert destination is not None  # checked
            written = export_ro_crate(store, args.uid, destination, recursive=args.recursive)
            print(f"wrote {written}", file=sys.stderr)
        else:
            from ..exchange._scicat import export_scicat

            body = export_scicat(
                store,
                args.uid,
                owner_group=args.owner_group,
                contact_email=args.contact_email,
                owner=args.owner,
                investigator=args.investigator,
                pid_template=args.pid_template,
            )
            _write_text(body.model_dump_json(indent=2), destination)
    return 0


def import_prov_command(args: argparse.Namespace, open_store: Callable[..., Any]) -> int:
    """``bas import-prov``."""
    from ..exchange._import import import_prov, read_prov_file

    read_prov_file(args.file)  # an unreadable file fails before the store is opened
    with open_store(args) as store:
        print(import_prov(store, args.file).as_text())
    return 0


def add_arguments(export: argparse.ArgumentParser, import_prov: argparse.ArgumentParser) -> None:
    """The arguments of ``bas export`` and ``bas import-prov`` (beside the store's)."""
    export.add_argument("uid", help="the run (full or partial uid)")
    export.add_argument("destination", nargs="?", help="FILE (prov-json, scicat) or DIR (ro-crate)")
    export.add_argument(
        "--format",
        required=True,
        nargs="+",
        action=_FormatAndDestination,
        metavar=("FORMAT", "DEST"),
        help="; ".join(f"{name}: {what}" for name, what in FORMATS.items())
        + " (DEST may follow FORMAT: --format ro-crate DIR)",
    )
    export.add_argument("-o", "--output", help="the destination (same as DEST)")
    export.add_argument(
        "--recursive", action="store_true", help="describe the whole ancestry, not only parents"
    )
    scicat = export.add_argument_group("scicat")
    scicat.add_argument("--owner-group", help="SciCat ownerGroup (required for scicat)")
    scicat.add_argument("--contact-email", help="SciCat contactEmail (required for scicat)")
    scicat.add_argument("--owner", help="SciCat owner (default: the user who ran the analysis)")
    scicat.add_argument("--investigator", help="SciCat investigator (default: the owner)")
    scicat.add_argument(
        "--pid-template",
        default=DEFAULT_PID_TEMPLATE,
        help="how the facility's SciCat names a raw run: a Python format string over the raw "
        "run's start document, e.g. '20.500.12269/{uid}' (default: %(default)s)",
    )
    import_prov.add_argument("file", type=Path, help="a PROV-JSON file from bas export")
