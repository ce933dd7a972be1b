"""``bas``: the command line of bluesky-analysis-store."""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..core._environment import API_KEY_ENV, DEFAULT_STORE, SPOOL_ENV, STORE_ENV
from ..core._names import FSCK_GRACE


def _target(args: argparse.Namespace) -> str:
    """The store a command names: ``--store``, else ``$BAS_STORE``, else the default."""
    return str(args.store or os.environ.get(STORE_ENV) or DEFAULT_STORE)


def _open_store(
    args: argparse.Namespace, *, read_only: bool = False, raw: bool = True, light: bool = False
) -> Any:
    """The store the command names; ``read_only``: create nothing (no store, no container, no
    file), so that the read-only key of ``bas serve`` works; ``raw``: open the raw catalog
    (``--raw``) too, for the reading commands that use it; ``light``: tiled's plain client
    classes (see :mod:`..store._reading_clients`), for commands that read a few runs' metadata."""
    from ..store._store import AnalysisStore

    structure_clients = None
    if light:
        from ..store._reading_clients import reading_clients

        structure_clients = reading_clients()

    target = _target(args)
    print(f"opening store {target} ...", file=sys.stderr, flush=True)
    return AnalysisStore.open(
        target,
        api_key=os.environ.get(API_KEY_ENV),
        root=args.root,
        # only reading commands use the raw catalog (lineage); none creates it
        raw=args.raw if read_only and raw else None,
        spool=args.spool or os.environ.get(SPOOL_ENV) or None,
        read_only=read_only,
        structure_clients=structure_clients,
    )


def _demo(args: argparse.Namespace) -> int:
    from ..examples._demo import run_demo, summarize

    result = run_demo(args.directory)
    try:
        print(summarize(result))
    finally:
        result.store.close()
    return 0


def _serve(args: argparse.Namespace) -> int:
    from ..core._environment import READ_KEY_ENV
    from ..server._workers import check_workers

    check_workers(args.workers, args.catalog, args.tables)  # before anything starts
    files = args.directory.resolve() / "files"
    workers = f", {args.workers} worker processes" if args.workers > 1 else ""
    serving = (
        f"serving the analysis store {args.directory} at http://{args.host}:{args.port} "
        f"(derived files under {files}; keys from ${API_KEY_ENV} and ${READ_KEY_ENV}{workers})"
    )
    if args.workers > 1:
        from ..server._workers import run_workers

        run_workers(
            args.directory,
            args.workers,
            catalog_uri=args.catalog,
            tables_uri=args.tables,
            host=args.host,
            port=args.port,
            announce=lambda: print(serving, flush=True),
        )
        return 0
    import uvicorn

    from ..server._server import build_server_app, keys_from_environment

    write_key, read_key = keys_from_environment()
    app = build_server_app(
        args.directory,
        write_key,
        read_key=read_key,
        catalog_uri=args.catalog,
        tables_uri=args.tables,
    )
    print(serving, flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


def _campaign(args: argparse.Namespace, *, dry_run: bool) -> Any:
    """``reprocess`` with the command's options (a dry run plans only)."""
    from ..reprocessing._reprocess import reprocess

    target = _target(args)
    print(f"opening store {target} ...", file=sys.stderr, flush=True)
    return reprocess(
        args.config,
        target,
        raw=args.raw,
        root=args.root,
        api_key=os.environ.get(API_KEY_ENV),
        workers=getattr(args, "workers", None),
        scheduler=getattr(args, "scheduler", None),
        dry_run=dry_run,
        progress=not dry_run,
    )


def _reprocess(args: argparse.Namespace) -> int:
    report = _campaign(args, dry_run=args.dry_run)
    if args.dry_run:
        print(f"campaign {report.campaign}: what would run (nothing ran)")
    else:
        print(f"campaign {report.campaign}: done in {report.seconds:.1f} s")
    print(report.table())
    return 1 if report.failed or report.skipped else 0


def _stale(args: argparse.Namespace) -> int:
    report = _campaign(args, dry_run=True)
    stale = report.stale
    for run in stale:
        print(f"{run.uid}  {run.procedure}: {'; '.join(run.reasons)}")
    for state in report.states.values():
        for record in state.failed_before:
            print(f"{record}  {state.task.key}: recorded as failed; it will run again")
    print(f"{len(stale)} stale run(s); what reprocessing would do:" if stale else "nothing stale")
    print(report.table())
    return 1 if stale else 0


def _stop_server(args: argparse.Namespace) -> int:
    from ..core._paths import is_server_uri
    from ..store._local_server import stop

    target = _target(args)
    if is_server_uri(target):
        print(f"{target} is a served store: stop its `bas serve` where it runs", file=sys.stderr)
        return 2
    directory = Path(target).resolve()
    pid = stop(directory)
    if pid is None:
        print(f"no local server is running for {directory}")
    else:
        print(f"stopped the local server of {directory} (pid {pid})")
    return 0


def _save(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..core._version import __version__
    from ..provenance._capture import capture_provenance
    from ._ingest import ingest_files, ingestable_files

    files = ingestable_files(args.directory)
    data_dicts, read = ingest_files(tqdm(files, desc="reading", unit="file", disable=None))
    provenance = capture_provenance(
        ingest_files,
        name=args.name,
        version=args.version or __version__,
        parents=args.parent,
        inputs=tqdm(read, desc="hashing", unit="file", disable=None),
        parameters={"directory": str(args.directory.resolve())},
    )
    with _open_store(args) as store:
        uid = store.save(
            data_dicts, {"ingested_from": str(args.directory.resolve())}, provenance=provenance
        )
    print(uid)
    return 0


def _show(args: argparse.Namespace) -> int:
    with _open_store(args, read_only=True, raw=False, light=True) as store:
        run = store[args.uid]
        start = run.metadata["start"]
        stop = run.metadata.get("stop") or {}
        print(f"uid:       {start['uid']}")
        print(f"analysis:  {start.get('analysis_name')} {start.get('analysis_version')}")
        print(f"lineage:   {start.get('lineage_hash')}")
        print(f"parents:   {', '.join(start.get('parent_uids', [])) or '-'}")
        if "sample_uuid" in start:
            print(f"sample:    {start.get('sample_name')} ({start['sample_uuid']})")
        print(f"status:    {stop.get('exit_status', 'incomplete (no stop document)')}")
        page = lineage_page_url(store, start["uid"])
        if page is not None:
            print(f"page:      {page}")
        for stream, keys in _stream_keys(run, stop):
            for key, shape in keys:
                print(f"  {stream}/{key}" + (f"  shape {shape}" if shape else ""))
    return 0


def lineage_page_url(store: Any, uid: str) -> str | None:
    """The address of run ``uid``'s lineage page when the store is reached through a server
    (``bas serve``, or an embedded store's local server), else None (a store in process)."""
    from urllib.parse import urlsplit

    from ..server._lineage_page import LINEAGE_PAGE

    api = str(getattr(getattr(store.runs, "context", None), "api_uri", "") or "")
    parts = urlsplit(api)
    if parts.scheme not in ("http", "https") or parts.hostname == "local-tiled-app":
        return None  # tiled's in-process app (Context.from_app) answers no browser
    root = api.removesuffix("/").removesuffix("/api/v1")
    return f"{root}{LINEAGE_PAGE}{uid}"


def _is_data_key(key: str) -> bool:
    """Not one of the columns every stream's table has besides its data keys."""
    return key not in {"seq_num", "time"} and not key.startswith("ts_")


def _stream_keys(run: Any, stop: Any) -> list[tuple[str, list[tuple[str, tuple[Any, ...]]]]]:
    """Each stream's data keys and shapes, streams sorted, keys in the descriptor's order.

    One listing of the run's streams (their metadata holds the descriptor's ``data_keys``); a
    key's shape is the stop document's ``num_events`` of the stream, then the shape of one
    event's value. A stream this cannot tell (no count of events in the stop document, none
    written, a shape with an unknown length, an older layout) is read node by node.
    """
    counts = stop.get("num_events") or {}
    listed = []
    # a generator: sorted() would first ask the container for its length, a request of its own
    base = getattr(run, "base", run)  # a BlueskyRun's container; tiled's plain one is itself
    streams = sorted(((name, node) for name, node in base.items()), key=lambda item: item[0])
    for stream, node in streams:
        data_keys = node.metadata.get("data_keys")
        events = counts.get(stream)
        shapes = [
            (key, (events, *(spec.get("shape") or ())))
            for key, spec in (data_keys or {}).items()
            if _is_data_key(key)
        ]
        if not data_keys or not events or any(None in shape for _, shape in shapes):
            shapes = _stored_shapes(run[stream])
        listed.append((stream, shapes))
    return listed


def _stored_shapes(stream: Any) -> list[tuple[str, tuple[Any, ...]]]:
    """A stream's data keys with the shapes of their stored nodes (a request or more per key)."""
    shapes = []
    for key in stream:
        if _is_data_key(key):
            shape = getattr(stream[key], "shape", None)
            shapes.append((key, tuple(shape) if shape else ()))
    return shapes


def _search(args: argparse.Namespace) -> int:
    from ..store._queries import AnalysisName, AnalysisVersion, DerivedFrom, LineageHash, SampleUUID

    queries = [
        *([DerivedFrom(args.derived_from)] if args.derived_from else []),
        *([LineageHash(args.lineage)] if args.lineage else []),
        *([SampleUUID(args.sample)] if args.sample else []),
        *([AnalysisName(args.analysis)] if args.analysis else []),
        *([AnalysisVersion(args.version)] if args.version else []),
    ]
    if args.since or args.until:  # bluesky-tiled-plugins takes seconds to import: only then
        from bluesky_tiled_plugins.queries import TimeRange

        queries.append(TimeRange(since=args.since, until=args.until))
    with _open_store(args, read_only=True, raw=False, light=True) as store:
        for uid, run in store.search(*queries).items():
            start = run.metadata["start"]
            print(f"{uid}  {start.get('analysis_name')} {start.get('analysis_version')}")
    return 0


def _lineage(args: argparse.Namespace) -> int:
    with _open_store(args, read_only=True, light=True) as store:
        graph = store.lineage(args.uid)
        print(graph.as_text())
        if args.output:
            print(f"picture: {graph.write_svg(args.output)}")
    return 0


def _fsck(args: argparse.Namespace) -> int:
    from ..store._fsck import check_store, repair
    from ..store._quarantine import purge_quarantine

    # only --repair writes to the catalog; a check (and --purge) opens the store read-only
    with _open_store(args, read_only=not args.repair) as store:
        if args.purge:
            print(purge_quarantine(store.root).as_text())
            return 0
        report = check_store(store, grace=args.grace)
        print(report.as_text(), flush=True)
        if args.repair and report.repairable:
            print(repair(store, report).as_text(), flush=True)
            report = check_store(store, grace=args.grace)
            print("after repair: " + (report.as_text() if report.problems else "clean"))
        elif args.repair and report.problems:
            print(_why_nothing_was_repaired(report))
    return 0 if report.clean else 1


def _why_nothing_was_repaired(report: Any) -> str:
    if report.moved_away:
        return (
            "nothing repaired: the files are recorded under another root (see above); run "
            "`bas fsck --repair` where the recorded paths are valid, or restart `bas serve` "
            "on the store where it is now"
        )
    if report.unreadable_spools and report.orphaned_files:
        return (
            "nothing repaired: orphaned files are kept while a spool the store recorded cannot "
            "be read here; run `bas fsck --repair` where it can, or pass --spool"
        )
    return "nothing to repair: missing files cannot be recreated; restore them from backup"


def _replay(args: argparse.Namespace) -> int:
    if args.source is not None or args.into is not None:
        return _replay_into(args)
    with _open_store(args) as store:
        if store.spool is None:
            print(
                f"no spool to replay: {args.store or 'this store'} is not served and no "
                f"--spool (or ${SPOOL_ENV}) was given"
            )
            return 1
        print(f"replaying the spool {store.spool}", flush=True)
        report = store.replay()
        print(report.as_text())
    return 1 if report.pending else 0


def _replay_into(args: argparse.Namespace) -> int:
    """``bas replay DIR --into TARGET``: a JSONL store's runs into a tiled store."""
    from ..store._jsonl_replay import replay_into
    from ..store._jsonl_store import JsonlStore, is_jsonl_store
    from ..store._store import AnalysisStore

    if args.source is None or args.into is None:
        print("bas replay DIR --into TARGET: give both the JSONL store and the target")
        return 2
    source = Path(str(args.source).removeprefix("jsonl:"))
    if not is_jsonl_store(source):
        print(f"{source} is not a JSONL store (no bas-jsonl-store.json); nothing was replayed")
        return 2
    print(f"opening store {args.into} ...", file=sys.stderr, flush=True)
    target = AnalysisStore.open(
        args.into, api_key=os.environ.get(API_KEY_ENV), root=args.root, spool=False
    )
    with target:
        if not isinstance(target, AnalysisStore):
            print(f"{args.into} is not a tiled store: replay a JSONL store into one")
            return 2
        print(f"replaying the JSONL store {source} into {args.into}", flush=True)
        report = replay_into(JsonlStore(source, read_only=True), target)
        print(report.as_text())
    return 1 if report.failed else 0


def _export(args: argparse.Namespace) -> int:
    from ._exchange import export_command

    return export_command(args, _open_store)


def _import_prov(args: argparse.Namespace) -> int:
    from ._exchange import import_prov_command

    return import_prov_command(args, _open_store)


def _profile_install(args: argparse.Namespace) -> int:
    from ._profile import install_profile, startup_files

    profile = install_profile(args.name, args.ipython_dir, force=args.force)
    names = ", ".join(entry.name for entry in startup_files())
    where = f" --ipython-dir={args.ipython_dir}" if args.ipython_dir is not None else ""
    print(f"installed {names} into {profile / 'startup'}")
    print(f"start it with: ipython{where} --profile={args.name}")
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
        help="where everything goes (default: a new bas-demo-* directory in the current one)",
    )
    demo.set_defaults(func=_demo)

    serve = commands.add_parser(
        "serve",
        help=f"run a tiled server for an analysis store (write key from ${API_KEY_ENV}, "
        "optional read-only key from $BAS_READ_API_KEY)",
    )
    serve.add_argument("directory", type=Path, help="the store directory (files, tiled storage)")
    serve.add_argument(
        "--catalog",
        help="catalog database, e.g. postgresql+asyncpg://USER@HOST:PORT/DB "
        "(default: DIRECTORY/catalog.db, SQLite)",
    )
    serve.add_argument(
        "--tables",
        help="table storage, e.g. postgresql://USER@HOST:PORT/DB (default: duckdb)",
    )
    serve.add_argument("--host", default="127.0.0.1", help="default: 127.0.0.1")
    serve.add_argument("--port", type=int, default=8000, help="default: 8000")
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        help="server processes behind the port (default: 1); more than one needs PostgreSQL "
        "for both --catalog and --tables",
    )
    serve.set_defaults(func=_serve)

    def store_command(
        name: str,
        help_text: str,
        raw_help: str = "the raw catalog's container, which lineage reads if it exists",
        *,
        spool: bool = True,
    ) -> argparse.ArgumentParser:
        command = commands.add_parser(name, help=help_text)
        command.add_argument(
            "--store",
            help=f"a store directory or http(s) URI (default: ${STORE_ENV} or ./{DEFAULT_STORE}); "
            f"a served store's API key is read from ${API_KEY_ENV}",
        )
        command.add_argument("--root", type=Path, help="file root of a served store")
        command.add_argument("--raw", default="raw", help=f"{raw_help} (default: raw)")
        if spool:
            command.add_argument(
                "--spool",
                type=Path,
                help=f"the spool directory (default: ${SPOOL_ENV}, else ROOT/.bas-spool for a "
                "served store)",
            )
        return command

    stop_server = commands.add_parser(
        "stop-server",
        help="stop the local server of an embedded store (it stops by itself once idle; "
        "processes that have the store open lose it)",
    )
    stop_server.add_argument(
        "--store", help=f"the store directory (default: ${STORE_ENV} or ./{DEFAULT_STORE})"
    )
    stop_server.set_defaults(func=_stop_server)

    save = store_command("save", "ingest the files of a directory as an analysis run")
    save.add_argument("directory", type=Path, help=".npy, .csv, .tif/.tiff files, one stream each")
    save.add_argument("--name", default="ingest", help="analysis name (default: ingest)")
    save.add_argument("--version", help="analysis version (default: this package's)")
    save.add_argument("--parent", action="append", default=[], help="a parent run uid (repeat)")
    save.set_defaults(func=_save)

    show = store_command("show", "summarize one run (full or partial uid)")
    show.add_argument("uid")
    show.set_defaults(func=_show)

    search = store_command("search", "list the runs matching every given condition")
    search.add_argument("--derived-from", metavar="UID", help="runs whose parents include UID")
    search.add_argument("--lineage", metavar="HASH", help="runs with this lineage hash")
    search.add_argument("--sample", metavar="SA-UUID", help="runs of this sample")
    search.add_argument("--analysis", metavar="NAME", help="runs of this analysis")
    search.add_argument("--version", help="runs of this analysis version")
    search.add_argument("--since", help="start time at or after (e.g. 2026-11-01)")
    search.add_argument("--until", help="start time before")
    search.set_defaults(func=_search)

    lineage = store_command("lineage", "print a run's provenance graph; draw it with --output")
    lineage.add_argument("uid")
    lineage.add_argument("--output", type=Path, help="write the graph as SVG to this file")
    lineage.set_defaults(func=_lineage)

    fsck = store_command(
        "fsck",
        "check the store for incomplete runs, orphaned files and missing files (changes "
        "nothing; works with a read-only key); exit 0 when clean, 1 when problems remain",
    )
    action = fsck.add_mutually_exclusive_group()
    action.add_argument(
        "--repair",
        action="store_true",
        help="move orphaned files into the store's quarantine (ROOT/.bas-quarantine), delete "
        "incomplete runs from the catalog (their documents kept in the quarantine), remove "
        "empty directories, then check again; nothing is deleted for good",
    )
    action.add_argument(
        "--purge",
        action="store_true",
        help="empty the quarantine for good (asks nothing; prints every file it removes)",
    )
    fsck.add_argument(
        "--grace",
        type=float,
        default=FSCK_GRACE,
        metavar="SECONDS",
        help="runs started and files touched less than SECONDS ago may still be being written: "
        f"reported as in progress, never repaired (default: {FSCK_GRACE:g}; 0 only when "
        "nothing is writing to the store)",
    )
    fsck.set_defaults(func=_fsck)

    replay = store_command(
        "replay",
        "insert the runs that went to the spool while the store could not be reached; exit 0 "
        "when nothing is left to do, 1 when spooled runs remain",
    )
    replay.add_argument(
        "source",
        nargs="?",
        type=Path,
        metavar="DIR",
        help="a JSONL store (jsonl:DIR) whose runs to insert into --into TARGET",
    )
    replay.add_argument(
        "--into",
        metavar="TARGET",
        help="with DIR: the store (directory or http(s) URI; --root for a served one) its runs "
        "go into, with every check of a direct save; exit 1 when a run was refused",
    )
    replay.set_defaults(func=_replay)

    # provenance that travels: exports (PROV-JSON, RO-Crate, SciCat) and import-prov
    from ._exchange import add_arguments as add_exchange_arguments

    export = store_command("export", "write a run's provenance as PROV-JSON, RO-Crate or SciCat")
    import_prov = store_command(
        "import-prov", "read a PROV-JSON export into this store's lineage (refuses conflicts)"
    )
    add_exchange_arguments(export, import_prov)
    export.set_defaults(func=_export)
    import_prov.set_defaults(func=_import_prov)

    def campaign_command(name: str, help_text: str) -> argparse.ArgumentParser:
        # the store where results go, with its raw catalog; reprocessing keeps no spool
        command = store_command(name, help_text, "the raw catalog's container", spool=False)
        command.add_argument("config", type=Path, help="the procedure file (YAML)")
        return command

    reprocess = campaign_command(
        "reprocess",
        "run the procedures of a file over the raw catalog on Dask, skipping what is stored; "
        "exit 1 when a task failed or was skipped",
    )
    where = reprocess.add_mutually_exclusive_group()
    where.add_argument(
        "--workers",
        type=int,
        help="worker processes of a new Dask LocalCluster (default: one per core; 0: no Dask, "
        "in this process)",
    )
    where.add_argument(
        "--scheduler", metavar="ADDRESS", help="a running Dask scheduler, e.g. tcp://host:8786"
    )
    reprocess.add_argument(
        "--dry-run",
        action="store_true",
        help="print the graph (tasks per procedure: stored, loose, stale, to run); run nothing",
    )
    reprocess.set_defaults(func=_reprocess)

    stale = campaign_command(
        "stale",
        "list the stored runs whose lineage no longer matches the procedures, and what "
        "reprocessing would recompute; exit 1 when some are stale",
    )
    stale.set_defaults(func=_stale)

    profile = commands.add_parser("profile", help="the IPython beamline profile")
    profile_commands = profile.add_subparsers(
        dest="profile_command", required=True, metavar="COMMAND"
    )
    install = profile_commands.add_parser(
        "install",
        help="copy the profile's startup files into IPYTHONDIR/profile_NAME/startup "
        "(settings come from environment variables at every start)",
    )
    install.add_argument("name", nargs="?", default="bas", help="profile name (default: bas)")
    install.add_argument(
        "--ipython-dir", type=Path, help="IPython's directory (default: $IPYTHONDIR or ~/.ipython)"
    )
    install.add_argument(
        "--force", action="store_true", help="overwrite startup files of the same name that differ"
    )
    install.set_defaults(func=_profile_install)
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
            # KeyError's str() adds quotes around its message
            message = str(error.args[0] if isinstance(error, KeyError) and error.args else error)
            print(f"bas {args.command}: error: {message}", file=sys.stderr)
        return 1
