"""``AnalysisStore``: a tiled catalog of analysis runs; it saves, inserts and looks up.

Opening is :mod:`._open`'s, the searches :mod:`._queries`', failure records :mod:`._failures`';
the store's methods of those names are their public face.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from ..core._errors import AnalysisStoreError, NotFoundError
from ..core._files import ClosingContext
from ..insert._runs import stored_run
from ._failures import failed_analyses, missing_analysis
from ._lineage_graph import LineageGraph, build_lineage_graph, lineage_graph_from_edges
from ._locks import create_lock_file
from ._open import open_store
from ._queries import (
    KEYS_PER_SEARCH,
    AnalysisName,
    AnalysisVersion,
    DerivedFrom,
    ExitStatus,
    LineageHash,
    SampleUUID,
    Supersedes,
    breadth_first,
    derived_from,
    finished,
    indexed_question,
    keys_of,
    search,
)
from ._saving import SavingStore, remove_files

if TYPE_CHECKING:
    from ..compose._compose import ComposedRun, PreparedRun
    from ..core._documents import Document, RunStart
    from ..insert._insert import StorePipeline
    from ..insert._spool import ReplayReport
    from ..pairs._pairs import PairRegistry
    from ._lineage_reader import LineageReader

#: how many uids one ``In`` search asks for (they travel in the request's URL)
UIDS_PER_SEARCH = 100

logger = logging.getLogger("bluesky_analysis_store.store")


class AnalysisStore(SavingStore, ClosingContext):
    """Analysis runs in a tiled catalog: save, insert documents, find, read back.

    Build one with :meth:`open`. ``store.runs`` is the bluesky-tiled-plugins
    ``CatalogOfBlueskyRuns`` client, so ``ScanID``, ``PartialUID``, ``TimeRange`` and
    ``runs[-1]`` work unchanged.

    Parameters
    ----------
    runs : CatalogOfBlueskyRuns client
        The container holding the analysis runs.
    root : Path
        Where derived files are written; tiled must be able to read it.
    registry : PairRegistry, optional
        Writer/handler pairs (default: every installed pair).
    raw : CatalogOfBlueskyRuns client, optional
        The raw catalog, so :meth:`lineage` can name the raw runs analyses were derived from.
    spool : Path, optional
        A directory for the durable local spool: every document is written there before it is
        inserted, and when the store cannot be reached the rest of the run stays there (the
        caller is not interrupted) until :meth:`replay` (``bas replay``) inserts it.
    context : object with ``close()``, optional
        What :meth:`close` releases: the HTTP connections, or the in-process app and this
        process's hold on an embedded store (:meth:`open` sets it).
    embedded_directory : Path, optional
        The directory of an embedded store (:meth:`open` sets it), served in this process or
        by its local server.
    read_only : bool
        Write nothing (see :meth:`open`): ``save``, ``insert`` and ``replay`` raise.
    lineage_index : LineageReader, optional
        Where lineage questions are answered from the catalog's lineage index (default: the
        store app's route; :meth:`open` gives an embedded store its catalog file); without an
        index they search by scan.
    """

    def __init__(
        self,
        runs: Any,
        root: str | Path,
        *,
        registry: PairRegistry | None = None,
        raw: Any = None,
        context: Any = None,
        spool: str | Path | None = None,
        embedded_directory: Path | None = None,
        read_only: bool = False,
        lineage_index: LineageReader | None = None,
    ) -> None:
        from ._lineage_reader import RouteReader

        self.runs = runs
        self._lineage = lineage_index if lineage_index is not None else RouteReader(runs)
        self.raw = raw
        self.root = Path(root).resolve()
        self._registry = registry
        self._context = context
        self._insert_lock = threading.Lock()  # a LiveAnalysis worker and the RunEngine share it
        self._embedded_directory = embedded_directory
        self.spool = Path(spool).resolve() if spool is not None else None
        # a read-only store inserts nothing: no pipeline (a request, and the insert chain's
        # and the pairs' imports) and no registry unless something asks for them
        self._store_pipeline: StorePipeline | None = (
            None if read_only else self._pipeline(self.spool)
        )
        self.read_only = read_only
        if not read_only:  # read-only writes nothing, not even the lock file
            create_lock_file(self.root)  # now, so that no save (even a refused one) creates it
            if self.spool is not None:  # so that `bas fsck` knows it (see register_spool)
                from ..insert._spool import register_spool

                register_spool(self.root, self.spool)

    @property
    def _inserter(self) -> StorePipeline:
        if self._store_pipeline is None:
            self._store_pipeline = self._pipeline(self.spool)
        return self._store_pipeline

    def _pipeline(self, spool: Path | None) -> StorePipeline:
        """A fresh document pipeline into ``runs``: per run, provenance required, the spool
        (if any), idempotence, the document gate and a TiledWriter (which closes no streams
        on a server that keeps none: :mod:`._streams_route`)."""
        from ..insert._insert import StorePipeline
        from ..insert._sink import SinkFactory
        from ._streams_route import server_streams

        runs = self.runs
        make_sink = SinkFactory(runs, self.registry, close_streams=lambda: server_streams(runs))
        return StorePipeline(self.runs, make_sink, spool=spool)

    open = staticmethod(open_store)

    def _expect_new(self, uid: str) -> None:
        self._inserter.expect_new(uid)

    def _take_back(self, run: ComposedRun) -> None:
        """A save failed halfway (refused, not unreachable): remove what it made, so that
        nothing of it is left; what cannot be removed stays incomplete, for ``bas fsck``."""
        from ._fsck import delete_run

        if self._inserter.created(run.uid):  # its node is this save's own
            try:
                delete_run(self.runs[run.uid])
            except Exception as error:  # e.g. a key without the delete scope
                logger.warning("could not delete the half-saved run %s: %s", run.uid, error)
        self._inserter.discard(run.uid)  # and its spool file
        if stored_run(self.runs, run.uid) is None:  # nothing refers to the files: take back
            remove_files(run.files, self.root)

    def _saved_while_reachable(self, prepared: PreparedRun) -> str | None:
        """:meth:`_already_saved`; with a spool, an unreachable store cannot tell, and the run
        is saved into the spool (the check is then best effort)."""
        if self.spool is not None and self._inserter.offline:
            return None  # unreachable moments ago: do not wait for it again
        try:
            return self._already_saved(prepared)
        except Exception as error:
            from ..insert._spool import is_unreachable

            if self.spool is None or not is_unreachable(error):
                raise
            self._inserter.mark_unreachable()  # the run's documents go straight to the spool
            logger.warning(
                "the analysis store cannot be reached to check lineage %s; saving run %s to "
                "the spool",
                prepared.lineage_hash,
                prepared.uid,
            )
            return None

    def _lineage_contents(self, lineage_hash: str) -> dict[str, str | None]:
        """``{uid: content_hash}`` of the complete runs of ``lineage_hash``: one indexed lookup
        (no request, embedded), else one request for their start documents."""
        answer = self._lineage.ask("with_lineage", lineage_hash=lineage_hash)
        if answer is not None:
            return {uid: content for uid, content in answer["runs"]}
        saved = search(self.runs, LineageHash(lineage_hash), ExitStatus("success"))
        return {uid: run.metadata["start"].get("content_hash") for uid, run in saved.items()}

    def insert(self, name: str, doc: Document) -> None:
        """Insert one document (subscribe this to a RunEngine: ``RE.subscribe(store.insert)``).

        Idempotent: a run already in the store, sent again unchanged, is skipped; the same uid
        with a different start or stop document raises :class:`RunConflictError`. With a spool,
        a store that cannot be reached raises nothing: the run goes to the spool.
        """
        self._check_writable("insert")
        with self._insert_lock:
            self._inserter(name, doc)

    def replay(self) -> ReplayReport:
        """Insert the runs waiting in the spool (see ``bas replay``) and return what was done.

        A run that was half inserted when the store went away is deleted and inserted again
        whole. Runs still being written, and spool files without a stop document, are left
        alone.
        """
        from ..insert._spool import replay_spool

        self._check_writable("replay")
        if self.spool is None:
            raise AnalysisStoreError(
                "this store has no spool: open it with spool=DIRECTORY (a served store's "
                "default is ROOT/.bas-spool)"
            )
        from ._fsck import delete_run

        return replay_spool(
            self.spool,
            self.runs,
            lambda: self._pipeline(None),
            lambda uid: delete_run(self.runs[uid]),
        )

    def __getitem__(self, key: Any) -> Any:
        """A run by full or partial uid (or ``-1`` for the latest)."""
        return self.runs[key]

    def scalar_table(self, uid: str, stream: str = "primary", *, timestamps: bool = False) -> Any:
        """Stream ``stream`` of run ``uid`` as a ``pandas.DataFrame`` of its scalar data keys,
        one row per event, with ``seq_num`` and ``time`` (and ``ts_KEY`` timestamps if
        ``timestamps``), read in one request (:mod:`._tables`).

        ``store[uid][stream].read()`` (an ``xarray.Dataset`` with the arrays too) takes six
        requests for a stream of scalars, and ``store[uid][stream][key].read()`` six per key.
        A partial uid costs one lookup first. Raises ``KeyError`` if the run or the stream does
        not exist.
        """
        from ._tables import scalar_table

        if len(uid) != 36:  # a partial uid (or -1): the run's full uid first
            uid = str(self.runs[uid].metadata["start"]["uid"])
        return scalar_table(self.runs, uid, stream, timestamps=timestamps)

    def __contains__(self, uid: object) -> bool:
        if isinstance(uid, str) and len(uid) == 36:  # a full uid: one exact lookup
            return stored_run(self.runs, uid) is not None
        try:
            return uid in self.runs
        except ValueError:  # bluesky-tiled-plugins: a partial uid shorter than 5 characters
            return False

    def __len__(self) -> int:
        # tiled's client caches a container's length for a second, and a count asked for right
        # after a save must include it: a fresh client of the same node (same queries and
        # sorting) has no cache, so this asks the server
        return len(self.runs.new_variation())

    def __iter__(self) -> Iterator[str]:
        return iter(self.runs)

    def search(self, *queries: Any) -> Any:
        """Runs matching every query (tiled queries, bluesky queries, or ours).

        :func:`DerivedFrom` and :func:`LineageHash` are answered from the lineage index when
        there is one: it names the runs (at most a few hundred), which are then searched for by
        key with the other queries, sorted by start time. Without an index (or for a larger
        answer) they are tiled searches over every run, as in tiled's own ``search``.
        """
        indexed = self._from_index(queries)
        runs = self.runs
        if indexed is not queries and getattr(runs, "sorting", None) == [("", 1)]:
            # not tiled's default order (node id): for it SQLite, which has no statistics of
            # the catalog, walks every run of the container in id order to find the few named
            runs = runs.sort(("start.time", 1))
        return search(runs, *indexed)

    def _from_index(self, queries: Sequence[Any]) -> Sequence[Any]:
        """``queries`` with those the index answers replaced by one ``KeysFilter`` of the runs
        they name (all of them; or none: ``queries`` itself)."""
        keys: list[str] | None = None
        rest = []
        for query in queries:
            question = indexed_question(query)
            if question is None:
                rest.append(query)
                continue
            ask, args = question
            answer = self._lineage.ask(ask, **args)
            if answer is None:  # no index: every query as it is (a scan)
                return queries
            found = keys_of(ask, answer)
            if keys is not None:  # several: the runs every one names
                named = set(found)
                found = [key for key in keys if key in named]
            keys = found
        if keys is None or len(keys) > KEYS_PER_SEARCH:
            return queries
        from tiled.queries import KeysFilter

        return [KeysFilter(keys), *rest]

    def derived_from(
        self, uid: str, *, recursive: bool = False, include_incomplete: bool = False
    ) -> list[str]:
        """Uids of the analysis runs whose parents include ``uid`` (its whole subtree if
        ``recursive``), breadth first, each once.

        Only runs whose stop document says ``exit_status == "success"`` are listed, unless
        ``include_incomplete``: failed analyses (see :meth:`failed_analyses`) and runs still
        being written (or cut off) are hidden.
        """
        answer = self._lineage.ask(
            "descendants", uid=uid, recursive=recursive, include_incomplete=include_incomplete
        )
        if answer is not None:  # one query, whatever the depth
            return breadth_first(uid, answer["edges"])
        return derived_from(
            self.runs, uid, recursive=recursive, include_incomplete=include_incomplete
        )

    def with_lineage(self, lineage_hash: str, *, include_incomplete: bool = False) -> list[str]:
        """Uids of the (complete) runs with this lineage hash (already computed?).

        Only runs whose stop document says ``exit_status == "success"`` are listed, unless
        ``include_incomplete``. Answered from the lineage index when there is one (in insertion
        order), else by a search over every run (in the catalog's order).
        """
        answer = self._lineage.ask(
            "with_lineage", lineage_hash=lineage_hash, include_incomplete=include_incomplete
        )
        if answer is not None:
            return [uid for uid, _ in answer["runs"]]
        return finished(self.runs, LineageHash(lineage_hash), include_incomplete=include_incomplete)

    def superseded_by(self, uid: str, *, include_incomplete: bool = False) -> list[str]:
        """Uids of the (complete) runs that supersede ``uid`` (``bas reprocess`` recomputed it:
        another analysis version, other parameters, or a recomputed parent); empty while it is
        current."""
        return finished(self.runs, Supersedes(uid), include_incomplete=include_incomplete)

    def of_sample(self, sample_uuid: str, *, include_incomplete: bool = False) -> list[str]:
        """Uids of the (complete) runs about one sample."""
        return finished(self.runs, SampleUUID(sample_uuid), include_incomplete=include_incomplete)

    def by_analysis(
        self, name: str, version: str | None = None, *, include_incomplete: bool = False
    ) -> list[str]:
        """Uids of the (complete) runs of an analysis (and version)."""
        queries = [AnalysisName(name)] + ([AnalysisVersion(version)] if version else [])
        return finished(self.runs, *queries, include_incomplete=include_incomplete)

    def failed_analyses(self, name: str | None = None) -> list[dict[str, Any]]:
        """The recorded analysis failures (of analysis ``name``, or all): for each, the record's
        ``uid``, ``analysis_name``, ``analysis_version``, ``parent_uids`` and ``reason``."""
        return failed_analyses(self.runs, name)

    def missing_analysis(
        self, name: str, raw_uids: Iterable[str] | None = None, *, version: str | None = None
    ) -> list[str]:
        """Which of ``raw_uids`` (default: every run of the raw catalog) have no complete run
        of analysis ``name`` (and ``version``) derived from them, in the given order."""
        answer = self._lineage.ask("analysed", name=name, version=version or None)
        analysed = None if answer is None else set(answer["parents"])  # else: by scan
        return missing_analysis(
            self.runs, self.raw, name, raw_uids, version=version, analysed=analysed
        )

    def analysis_starts(self, names: Iterable[str], exit_status: str) -> dict[str, RunStart]:
        """``{uid: start}`` of the runs of the analyses ``names`` that ended with
        ``exit_status``: one search."""
        from tiled.queries import In

        names = sorted(set(names))
        if not names:
            return {}
        found = search(self.runs, In("start.analysis_name", names), ExitStatus(exit_status))
        return {uid: cast("RunStart", dict(run.metadata["start"])) for uid, run in found.items()}

    def find_run(self, uid: str) -> Any | None:
        """Run ``uid`` (a full uid; one exact lookup), or None."""
        return stored_run(self.runs, uid)

    def start_document(self, uid: str) -> RunStart | None:
        """The start document of ``uid`` from the analysis or the raw catalog, or None."""
        for catalog in (self.runs, self.raw):
            if (start := _start_in(catalog, uid)) is not None:
                return start
        return None

    def _raw_start(self, uid: str) -> RunStart | None:
        return _start_in(self.raw, uid)

    def start_documents(self, uids: Sequence[str]) -> dict[str, RunStart]:
        """The start documents of the full ``uids`` found in the analysis catalog, else in the
        raw one: one search per catalog (per :data:`UIDS_PER_SEARCH` uids), not one per run."""
        from tiled.queries import In

        found: dict[str, RunStart] = {}
        for catalog in (self.runs, self.raw):
            missing = [uid for uid in uids if uid not in found]
            for i in range(0, len(missing) if catalog is not None else 0, UIDS_PER_SEARCH):
                batch = In("start.uid", missing[i : i + UIDS_PER_SEARCH])
                for _, run in catalog.search(batch).items():
                    start = cast("RunStart", dict(run.metadata["start"]))
                    found[start["uid"]] = start
        return found

    def _derived_starts(self, uid: str) -> dict[str, RunStart]:
        """:meth:`derived_from` (not recursive) with the runs' start documents: one search."""
        runs = search(self.runs, DerivedFrom(uid), ExitStatus("success"))
        return {
            key: cast("RunStart", dict(run.metadata["start"]))
            for key, run in runs.items()
            if key != uid
        }

    def lineage(self, uid: str) -> LineageGraph:
        """The provenance graph around ``uid``: ancestors (analysis and raw) and descendants.

        ``graph.as_text()`` prints a tree; ``graph.write_svg(path)`` draws a picture.
        """
        answer = self._lineage.ask("lineage", uid=uid)
        if answer is not None and uid not in answer["starts"]:  # a raw run, or a partial uid
            start = self.start_document(uid)
            if start is None:
                raise NotFoundError(f"no run {uid!r} in the analysis store or its raw catalog")
            if start["uid"] != uid:
                uid = start["uid"]
                answer = self._lineage.ask("lineage", uid=uid)
        if answer is not None:  # three statements in one request (or none, embedded)
            # the analysis runs' starts came with the answer: the rest can only be raw runs
            return lineage_graph_from_edges(
                uid, answer["up"], answer["down"], answer["starts"], self._raw_start
            )
        start = self.start_document(uid)  # also resolves a partial uid
        if start is None:
            raise NotFoundError(f"no run {uid!r} in the analysis store or its raw catalog")
        return build_lineage_graph(start, self.start_documents, self._derived_starts)

    def close(self) -> None:
        """Release what :meth:`open` opened: the in-process server or the HTTP connections, and
        the embedded store (runs still open in the spool keep their files there, for
        replay)."""
        if self._store_pipeline is not None:  # a read-only store's is never built
            self._store_pipeline.close()
        self._lineage.close()
        if self._context is not None:
            self._context.close()
            self._context = None


def _start_in(catalog: Any, uid: str) -> RunStart | None:
    """The start document of ``uid`` in ``catalog`` (None: no catalog, or no such run), in one
    lookup."""
    if catalog is None:
        return None
    if len(uid) == 36:  # a full uid: one exact lookup, no partial-uid search after it
        run = stored_run(catalog, uid)
    else:  # one lookup (``uid in catalog`` would be a second)
        try:
            run = catalog[uid]
        except KeyError:
            run = None
    return None if run is None else cast("RunStart", dict(run.metadata["start"]))  # tiled: Any
