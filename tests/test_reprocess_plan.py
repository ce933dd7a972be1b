"""Reprocessing without a Dask cluster (``workers=0`` runs each task in this process through the
same ``run_task`` a Dask worker runs): procedure files and their errors, analyses as plugins,
raw queries, grouping, chained procedures, rerun, staleness, loose matching, failures and
retries.

One embedded store for the module, reached through its local server as ``reprocess`` reaches
it, with a raw catalog filled by a real RunEngine and ophyd.sim. Each scenario uses its own
procedure names and parameters, so that their runs do not meet.
"""

from __future__ import annotations

import sys
import tempfile
import textwrap
from dataclasses import dataclass
from datetime import datetime
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bluesky_analysis_store import AnalysisStore
from bluesky_analysis_store.core._errors import ProcedureError
from bluesky_analysis_store.reprocessing import (
    ANALYSES_ENTRY_POINT_GROUP,
    find_analysis,
    load_campaign,
    reprocess,
)
from bluesky_analysis_store.reprocessing._procedures import RawQuery
from bluesky_analysis_store.reprocessing._tasks import build_task_graph, find_raw_runs

# --- the raw catalog ------------------------------------------------------------------------


@dataclass
class Lab:
    """The module's store and its raw runs (scan ids 1-6 succeeded, 7 failed)."""

    directory: Path
    store: AnalysisStore
    uids: dict[int, str]  # scan id -> raw uid
    times: dict[int, float]  # scan id -> start time

    def uid(self, *scan_ids: int) -> list[str]:
        return [self.uids[s] for s in scan_ids]

    def derived_runs(self) -> int:
        # counted by listing: tiled's client keeps len() for a second (LENGTH_CACHE_TTL)
        return sum(1 for _ in self.store.runs)

    def reprocess(self, config: Path, **options: Any) -> Any:
        options.setdefault("workers", 0)
        return reprocess(config, self.directory, raw="raw", **options)


#: scan id -> (plan, metadata); plan "count" or "scan"
RAW_RUNS: dict[int, tuple[str, dict[str, Any]]] = {
    1: ("scan", {"sample_uuid": "SA-1", "operator": "alice", "experiment": {"kind": "xas"}}),
    2: ("scan", {"sample_uuid": "SA-1", "operator": "bob", "experiment": {"kind": "xrd"}}),
    3: ("scan", {"sample_uuid": "SA-2", "operator": "alice"}),
    4: ("count", {"sample_uuid": "SA-2"}),
    5: ("scan", {}),  # no sample
    6: ("scan", {"sample_uuid": "SA-1"}),
}


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Raw runs scanned by a real RunEngine with ophyd.sim into an embedded store's raw
    catalog, opened through its local server (which ``reprocess`` shares)."""
    from bluesky import RunEngine
    from bluesky import plan_stubs as bps
    from bluesky import plans as bp
    from bluesky_tiled_plugins.writing.tiled_writer import TiledWriter

    from bluesky_analysis_store.store._local_server import stop

    previous = tempfile.tempdir  # ophyd.sim makes a temporary directory at import
    tempfile.tempdir = str(tmp_path_factory.mktemp("ophyd-sim"))
    try:
        from ophyd.sim import det, motor
    finally:
        tempfile.tempdir = previous

    directory = tmp_path_factory.mktemp("reprocess") / "store"
    store = AnalysisStore.open(directory, raw="raw", local_server=True)
    try:
        engine = RunEngine({})
        engine.subscribe(TiledWriter(store.raw))
        uids: dict[int, str] = {}
        for scan_id, (plan, md) in RAW_RUNS.items():
            det.center.put(scan_id / 10)  # each run its own data
            if plan == "count":
                (uids[scan_id],) = engine(bp.count([det], 5), **md)
            else:
                (uids[scan_id],) = engine(bp.scan([det], motor, -1, 1, 5), **md)

        @bpp_run_decorator()
        def aborted() -> Any:
            yield from bps.null()
            raise RuntimeError("the beam dumped")

        with pytest.raises(RuntimeError, match="beam dumped"):
            engine(aborted())
        starts = {uid: run.metadata["start"] for uid, run in store.raw.items()}
        (uids[7],) = (uid for uid, start in starts.items() if start["scan_id"] == 7)
        assert sorted(s["scan_id"] for s in starts.values()) == list(range(1, 8))
        yield Lab(directory, store, uids, {s: starts[u]["time"] for s, u in uids.items()})
    finally:
        store.close()
        stop(directory)


def bpp_run_decorator() -> Any:
    from bluesky import preprocessors as bpp

    return bpp.run_decorator()


def procedure_file(directory: Path, text: str, name: str = "campaign.yaml") -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def bas(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``bas ARGS`` in this process: its exit code, standard output and error."""
    from bluesky_analysis_store.cli import main

    capsys.readouterr()
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def problems_of(path: Path) -> list[str]:
    with pytest.raises(ProcedureError) as caught:
        load_campaign(path)
    return caught.value.problems


# --- invalid configurations -----------------------------------------------------------------

SUMS = """
    procedures:
      sums:
        analysis: reprocess_analyses:scaled_sum
        version: "1"
        parameters: {scale: 2}
        inputs: {raw: {plan_name: scan}}
"""


def test_an_unknown_analysis_is_named_with_the_installed_ones(tmp_path):
    path = procedure_file(
        tmp_path,
        """
        procedures:
          binned:
            analysis: normalise_and_bin
            version: "1.0"
            inputs: {raw: {}}
          other:
            analysis: reprocess_analyses:no_such_function
            version: "1"
            inputs: {raw: {}}
        """,
    )
    unknown, unimportable = problems_of(path)
    assert unknown.startswith(f"{path}: procedure 'binned': analysis: no analysis ")
    assert "'normalise_and_bin'" in unknown
    assert "installed: average_curves, image_profile_peak, normalize_and_bin" in unknown
    assert unimportable.startswith(f"{path}: procedure 'other': analysis: ")
    assert "cannot be imported" in unimportable
    assert "no_such_function" in unimportable


def test_a_version_that_does_not_match_the_installed_analysis_is_refused(tmp_path):
    path = procedure_file(tmp_path, SUMS.replace('version: "1"', 'version: "2"'))
    (problem,) = problems_of(path)
    assert problem == (
        f"{path}: procedure 'sums': version: the procedure asks for scaled_sum version '2'; "
        "the installed one is '1' (write that version to run it)"
    )


def test_a_version_written_as_a_number_asks_for_quotes(tmp_path):
    path = procedure_file(tmp_path, SUMS.replace('version: "1"', "version: 1.10"))
    (problem,) = problems_of(path)
    assert problem == (
        f"{path}: procedure 'sums': version: YAML read 1.1 as a number; write the version in "
        'quotes (version: "...")'
    )


def test_parameters_are_checked_by_the_model_and_by_the_signature(tmp_path):
    path = procedure_file(
        tmp_path,
        """
        procedures:
          sums:
            analysis: reprocess_analyses:scaled_sum
            version: "1"
            parameters: {scale: -1, colour: red}
            inputs: {raw: {}}
          merged:
            analysis: reprocess_analyses:merge_runs
            version: "1"
            parameters: {label: x, colour: red}
            inputs: {procedure: sums}
            per: all
        """,
    )
    problems = problems_of(path)
    assert len(problems) == 3, problems
    assert (
        f"{path}: procedure 'sums': parameters.scale: Input should be greater than 0"
        in (problems[0])
    )
    assert problems[1].startswith(
        f"{path}: procedure 'sums': parameters.colour: Extra inputs are not permitted"
    )
    assert problems[2] == (
        f"{path}: procedure 'merged': parameters.colour: merge_runs takes no parameter "
        "'colour'; it takes 'label'"
    )


def test_dangling_references_and_cycles_are_errors(tmp_path):
    path = procedure_file(
        tmp_path,
        """
        procedures:
          first:
            analysis: reprocess_analyses:merge_runs
            version: "1"
            inputs: {procedures: [second]}
          second:
            analysis: reprocess_analyses:merge_runs
            version: "1"
            inputs: {procedure: first}
          third:
            analysis: reprocess_analyses:merge_runs
            version: "1"
            inputs: {procedure: fourth}
        """,
    )
    dangling, cycle = problems_of(path)
    assert dangling == (
        f"{path}: procedure 'third': inputs.procedures: no procedure 'fourth' "
        "(defined: first, second, third)"
    )
    assert cycle.startswith(f"{path}: procedure '")
    assert "inputs.procedures: the procedures form a cycle: " in cycle
    chain = cycle.rsplit(": ", 1)[1].split(" -> ")
    assert set(chain) == {"first", "second"}
    assert chain[0] == chain[-1]


def test_includes_that_loop_or_define_a_procedure_twice_are_errors(tmp_path):
    main = procedure_file(tmp_path, "include: [lib/a.yaml]\n" + textwrap.dedent(SUMS))
    library = procedure_file(
        tmp_path,
        """
        include: [../campaign.yaml]
        procedures:
          sums:
            analysis: reprocess_analyses:merge_runs
            version: "1"
            inputs: {raw: {}}
        """,
        "lib/a.yaml",
    )
    duplicate, loop = sorted(problems_of(main), key=lambda p: "the includes loop" in p)
    assert duplicate == (
        f"{library}: procedure 'sums': (procedure): defined twice: also in {main} (names are "
        "unique across included files)"
    )
    chain = f"{main} includes {library} includes {main}"
    assert loop == f"{library}: include: the includes loop: {chain}"


def test_unreadable_files_are_errors(tmp_path):
    bad = procedure_file(tmp_path, "procedures: {sums: [unclosed\n", "bad.yaml")
    (problem,) = problems_of(bad)
    assert problem.startswith(f"{bad}: not valid YAML: ")
    twice = procedure_file(tmp_path, SUMS + SUMS.split("procedures:")[1], "twice.yaml")
    (problem,) = problems_of(twice)
    assert problem.startswith(f"{twice}: not valid YAML: while reading a mapping")
    assert "found the key 'sums' twice" in problem
    assert "line 9, column 3" in problem
    missing = tmp_path / "missing.yaml"
    (problem,) = problems_of(missing)
    assert problem == f"{missing}: cannot read: No such file or directory"
    included = procedure_file(tmp_path, "include: [nowhere.yaml]\n" + textwrap.dedent(SUMS))
    (problem,) = problems_of(included)
    assert problem == f"{tmp_path / 'nowhere.yaml'}: cannot read: No such file or directory"
    empty = procedure_file(tmp_path, "name: nothing\n", "empty.yaml")
    (problem,) = problems_of(empty)
    assert problem == f"{empty}: procedures: none defined (here or in its includes)"


def test_fields_of_a_procedure_are_checked_each_named(tmp_path):
    path = procedure_file(
        tmp_path,
        """
        procedures:
          ranged:
            analysis: reprocess_analyses:scaled_sum
            version: "1"
            inputs: {raw: {}}
            per: scan_range
          sized:
            analysis: reprocess_analyses:scaled_sum
            version: "1"
            inputs: {raw: {}}
            scan_range: 10
          both:
            analysis: reprocess_analyses:merge_runs
            version: "1"
            inputs: {raw: {}, procedures: [ranged]}
          neither:
            analysis: reprocess_analyses:merge_runs
            version: "1"
            inputs: {}
          typo:
            analysis_name: reprocess_analyses:scaled_sum
            version: "1"
            inputs: {raw: {colour: red}}
            per: sometimes
          empty:
            analysis: reprocess_analyses:scaled_sum
            version: "1"
            inputs: {raw: {scan_id: [5, 1]}}
          listed:
            analysis: reprocess_analyses:scaled_sum
            version: "1"
            inputs: {raw: {start: {detectors: [det], experiment: {kind: xas, tags: {}}}}}
          when:
            analysis: reprocess_analyses:scaled_sum
            version: "1"
            inputs: {raw: {since: yesterday, until: "2026-03-01T08:00"}}
        """,
    )
    problems = problems_of(path)
    where = f"{path}: procedure "
    expected = [
        f"{where}'ranged': scan_range: scan_range (scans per group) is given with per: "
        "scan_range only",
        f"{where}'sized': scan_range: scan_range (scans per group) is given with per: "
        "scan_range only",
        f"{where}'both': inputs: give exactly one of 'raw' (a query) or 'procedures' (names)",
        f"{where}'neither': inputs: give exactly one of 'raw' (a query) or 'procedures' (names)",
        f"{where}'typo': analysis: Field required",
        f"{where}'typo': inputs.raw.colour: Extra inputs are not permitted",
        f"{where}'empty': inputs.raw: scan_id range [5, 1] is empty: first > last",
        f"{where}'listed': inputs.raw.start: detectors: list ['det'] cannot be compared; "
        "experiment.tags: dict {} cannot be compared; give one value (a string, number, "
        "true/false or null) per key",
        f"{where}'when': inputs.raw.since: 'yesterday' is not an ISO date or time (2026-03-01 "
        "or 2026-03-01T08:00)",
        f"{where}'typo': per: Input should be 'run', 'sample', 'scan_range' or 'all'",
        f"{where}'typo': analysis_name: Extra inputs are not permitted",
    ]
    assert sorted(problems) == sorted(expected), problems


def test_an_invalid_file_writes_nothing_and_starts_no_dask(lab, tmp_path):
    path = procedure_file(
        tmp_path,
        """
        procedures:
          sums:
            analysis: reprocess_analyses:scaled_sum
            version: "1"
            inputs: {raw: {}}
          merged:
            analysis: reprocess_analyses:merge_runs
            version: "1"
            inputs: {procedure: sums}
            per: sample
            colour: red
          third:
            analysis: reprocess_analyses:merge_runs
            version: "1"
            inputs: {procedure: nowhere}
        """,
    )
    before = lab.derived_runs()
    dask_before = "distributed" in sys.modules
    with pytest.raises(ProcedureError) as caught:
        lab.reprocess(path, workers=None)  # a LocalCluster, were anything to run
    assert str(caught.value).startswith("2 problems in the procedures; nothing ran:\n  - ")
    assert caught.value.problems == [
        f"{path}: procedure 'merged': colour: Extra inputs are not permitted",
        f"{path}: procedure 'third': inputs.procedures: no procedure 'nowhere' "
        "(defined: merged, sums, third)",
    ]
    assert lab.derived_runs() == before
    if not dask_before:
        assert "distributed" not in sys.modules


def test_a_store_that_does_not_exist_is_not_created(tmp_path, capsys):
    config = procedure_file(tmp_path, SUMS)
    typo = tmp_path / "stroe"
    code, _, err = bas(capsys, "reprocess", str(config), "--store", str(typo), "--workers", "0")
    assert code == 1
    assert err.splitlines()[-1] == (
        f"bas reprocess: error: no analysis store at {typo}: reprocessing reads the raw catalog "
        "of an existing store (check --store)"
    )
    assert not typo.exists()


def test_a_raw_catalog_that_does_not_exist_is_not_created(lab, tmp_path, capsys):
    config = procedure_file(tmp_path, SUMS)
    code, _, err = bas(
        capsys, "reprocess", str(config), "--store", str(lab.directory), "--raw", "rwa"
    )
    assert code == 1
    assert err.splitlines()[-1] == (
        f"bas reprocess: error: the store {lab.directory.resolve()} has no raw catalog 'rwa' "
        "(check --raw); nothing was written"
    )
    probe = AnalysisStore.open(lab.directory, raw="rwa", read_only=True, local_server=True)
    try:
        assert probe.raw is None  # not created
    finally:
        probe.close()


def test_a_campaign_is_rehearsed_on_a_null_store(lab, tmp_path, capsys):
    """``--store null:STORE``: the raw runs read from STORE, every task run and its result
    checked as a save checks it, nothing stored anywhere."""
    config = procedure_file(tmp_path, SUMS.replace("scale: 2", "scale: 11"))
    before = lab.derived_runs()
    report = reprocess(config, f"null:{lab.directory}", raw="raw", workers=0)
    assert report.outcomes
    assert {o.status for o in report.outcomes.values()} == {"ran"}  # every task ran
    assert all(o.uid for o in report.outcomes.values())  # the uid a save would have given
    code, out, err = bas(
        capsys, "reprocess", str(config), "--store", f"null:{lab.directory}", "--workers", "0"
    )
    assert code == 0, err
    (row,) = out.splitlines()[2:]
    tasks = len(report.outcomes)
    assert row.split() == ["sums", str(tasks), "0", "0", "0", str(tasks), str(tasks), "0", "0"]
    assert lab.derived_runs() == before  # nothing stored
    code, _, err = bas(capsys, "reprocess", str(config), "--store", "null:", "--workers", "0")
    assert code == 1
    assert "a rehearsal names it, null:STORE" in err


# --- includes and analyses as plugins -------------------------------------------------------


def test_includes_are_relative_to_the_including_file(tmp_path, monkeypatch):
    library = procedure_file(tmp_path, "include: [more/sums.yaml]\n", "lib/library.yaml")
    sums = procedure_file(tmp_path, SUMS, "lib/more/sums.yaml")
    main = procedure_file(
        tmp_path,
        """
        name: included
        include: [lib/library.yaml]
        retries: 2
        procedures:
          merged:
            analysis: reprocess_analyses:merge_runs
            version: "1"
            inputs: {procedure: sums}
            per: all
        """,
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    campaign = load_campaign(main)
    assert (campaign.name, campaign.file) == ("included", main)
    assert list(campaign.procedures) == ["sums", "merged"]  # each after what it reads
    assert campaign.procedures["sums"].file == sums
    assert campaign.procedures["merged"].file == main
    # defaults are the defining file's: the library's retries is 0, the main file's 2
    assert campaign.procedures["sums"].retries == 0
    assert campaign.procedures["merged"].retries == 2
    assert campaign.procedures["sums"].parameters == {"scale": 2.0, "detector": "det"}
    assert library.exists()


def test_analyses_are_found_by_entry_point_and_by_reference():
    published = {ep.name: ep.value for ep in entry_points(group=ANALYSES_ENTRY_POINT_GROUP)}
    assert {"normalize_and_bin", "image_profile_peak", "average_curves"} <= set(published)
    from bluesky_analysis_store.examples import average_curves, normalize_and_bin

    plugin = find_analysis("normalize_and_bin")
    assert plugin.target is normalize_and_bin
    assert (plugin.name, plugin.version) == ("normalize_and_bin", "1.0")
    assert find_analysis("average_curves").target is average_curves
    import reprocess_analyses

    v1 = find_analysis("reprocess_analyses:scaled_sum")
    v2 = find_analysis("reprocess_analyses:scaled_sum_v2")
    assert v1.target is reprocess_analyses.scaled_sum
    assert (v1.name, v1.version, v2.name, v2.version) == ("scaled_sum", "1", "scaled_sum", "2")
    assert (v1.code.module, v2.code.qualname) == ("reprocess_analyses", "scaled_sum_v2")


def test_burn_spins_the_cpu_and_returns_a_small_result(lab):
    run = lab.store.raw[lab.uids[1]]
    data_dicts, md = find_analysis("reprocess_analyses:burn")(run, {"seconds": 0.02})
    (event,) = data_dicts
    assert event["burned"]["iterations"] >= 1000
    assert md == {"source": lab.uids[1]}


# --- raw queries and grouping ---------------------------------------------------------------


def _midpoint(lab: Lab, before: int, after: int) -> str:
    """An ISO local time between the starts of two scans (never an absolute time)."""
    return datetime.fromtimestamp((lab.times[before] + lab.times[after]) / 2).isoformat()


@pytest.mark.parametrize(
    ("query", "scan_ids"),
    [
        ({}, [1, 2, 3, 4, 5, 6]),
        ({"exit_status": None}, [1, 2, 3, 4, 5, 6, 7]),
        ({"plan_name": "count"}, [4]),
        ({"plan_name": ["count", "scan"], "scan_id": [3, 5]}, [3, 4, 5]),
        ({"scan_id": 2}, [2]),
        ({"sample_uuid": "SA-2"}, [3, 4]),
        ({"sample_uuid": ["SA-1", "SA-2"], "plan_name": "scan"}, [1, 2, 3, 6]),
        ({"start": {"operator": "alice"}}, [1, 3]),
        ({"start": {"experiment.kind": "xrd"}}, [2]),
        ({"start": {"experiment": {"kind": "xrd"}}}, [2]),
        ({"start": {"operator": "alice", "experiment.kind": "xas"}}, [1]),
        ({"since": (2, 3)}, [3, 4, 5, 6]),
        ({"until": (2, 3)}, [1, 2]),
        ({"since": (1, 2), "until": (4, 5)}, [2, 3, 4]),
        ({"uids": [1, 6]}, [1, 6]),
    ],
)
def test_raw_queries_select_the_runs(lab, query, scan_ids):
    for key in ("since", "until"):
        if key in query:
            query[key] = _midpoint(lab, *query[key])
    if "uids" in query:
        query["uids"] = lab.uid(*query["uids"])
    found = find_raw_runs(lab.store.raw, RawQuery.model_validate(query))
    assert sorted(start["scan_id"] for start in found.values()) == scan_ids
    assert set(found) == set(lab.uid(*scan_ids))


def test_grouping_makes_the_expected_tasks(lab, tmp_path):
    path = procedure_file(
        tmp_path,
        """
        procedures:
          each:
            analysis: reprocess_analyses:scaled_sum
            version: "1"
            inputs: {raw: {}}
          by_sample:
            analysis: reprocess_analyses:merge_runs
            version: "1"
            inputs: {procedure: each}
            per: sample
          by_range:
            analysis: reprocess_analyses:merge_runs
            version: "1"
            inputs: {procedure: each}
            per: scan_range
            scan_range: 4
          raw_by_sample:
            analysis: reprocess_analyses:merge_runs
            version: "1"
            inputs: {raw: {plan_name: scan}}
            per: sample
          everything:
            analysis: reprocess_analyses:merge_runs
            version: "1"
            inputs: {procedures: [by_sample, by_range]}
            per: all
        """,
    )
    graph = build_task_graph(load_campaign(path), lab.store.raw)
    uids = lab.uids
    each = {t.label: t for t in graph.of("each")}
    assert set(each) == set(lab.uid(1, 2, 3, 4, 5, 6))
    assert all(t.raw_parents == (t.label,) and not t.upstream for t in each.values())

    by_sample = {t.label: t for t in graph.of("by_sample")}
    assert set(by_sample) == {"sample SA-1", "sample SA-2"}
    assert set(by_sample["sample SA-1"].upstream) == {f"each[{uids[s]}]" for s in (1, 2, 6)}
    assert set(by_sample["sample SA-2"].roots) == set(lab.uid(3, 4))
    assert by_sample["sample SA-1"].raw_parents == ()
    assert graph.left_out["by_sample"] == [f"runs {uids[5][:8]}: no single sample_uuid"]

    by_range = {t.label: set(t.roots) for t in graph.of("by_range")}
    assert by_range == {"scans 1-4": set(lab.uid(1, 2, 3, 4)), "scans 5-8": set(lab.uid(5, 6))}

    raw_by_sample = {t.label: set(t.raw_parents) for t in graph.of("raw_by_sample")}
    assert raw_by_sample == {"sample SA-1": set(lab.uid(1, 2, 6)), "sample SA-2": {uids[3]}}
    assert graph.left_out["raw_by_sample"] == [f"runs {uids[5][:8]}: no single sample_uuid"]

    (everything,) = graph.of("everything")
    assert everything.key == "everything[all]"
    assert set(everything.upstream) == {
        "by_sample[sample SA-1]",
        "by_sample[sample SA-2]",
        "by_range[scans 1-4]",
        "by_range[scans 5-8]",
    }
    assert set(everything.roots) == set(lab.uid(1, 2, 3, 4, 5, 6))
    keys = list(graph.tasks)  # each task after the tasks it reads
    assert all(keys.index(u) < keys.index(t.key) for t in graph.tasks.values() for u in t.upstream)

    report = lab.reprocess(path, dry_run=True)
    assert f"by_sample: left out: runs {uids[5][:8]}: no single sample_uuid" in report.table()
    assert report.left_out == graph.left_out
    assert {n: s.tasks for n, s in report.summary().items()} == {
        "each": 6,
        "by_sample": 2,
        "by_range": 2,
        "raw_by_sample": 2,
        "everything": 1,
    }


# --- chained procedures, rerun, staleness ---------------------------------------------------

CHAIN = """
    name: chain
    procedures:
      sums:
        analysis: reprocess_analyses:{analysis}
        version: "{version}"
        parameters: {{scale: {scale}}}
        inputs: {{raw: {{scan_id: [1, 3]}}}}
      merged:
        analysis: reprocess_analyses:merge_runs
        version: "1"
        inputs: {{procedure: sums}}
        per: sample
"""


def chain_file(directory: Path, analysis: str = "scaled_sum", version: str = "1", scale=2):
    text = CHAIN.format(analysis=analysis, version=version, scale=scale)
    return procedure_file(directory, text, f"chain-{analysis}-{scale}.yaml")


def _total(run: Any, stream: str = "result") -> float:
    return float(np.asarray(run[stream].read()["total"])[0])


@pytest.fixture(scope="module")
def chain(lab, tmp_path_factory):
    """The chain campaign, version 1, run once: (its file, its report, derived runs before)."""
    directory = tmp_path_factory.mktemp("chain")
    path = chain_file(directory)
    before = lab.derived_runs()
    return directory, lab.reprocess(path), before


def test_chained_procedures_save_results_with_provenance(lab, chain):
    _, report, before = chain
    assert {n: (s.tasks, s.to_run, s.ran) for n, s in report.summary().items()} == {
        "sums": (3, 3, 3),
        "merged": (2, 2, 2),
    }
    assert lab.derived_runs() == before + 5
    sums = {}
    for scan_id in (1, 2, 3):
        raw_uid = lab.uids[scan_id]
        outcome = report.outcomes[f"sums[{raw_uid}]"]
        assert (outcome.status, outcome.attempts) == ("ran", 1)
        start = lab.store.start_document(outcome.uid)
        assert start["parent_uids"] == [raw_uid]
        assert start["reprocess"] == {"campaign": "chain", "procedure": "sums"}
        assert start["lineage_hash"] == outcome.lineage_hash
        assert start["sample_uuid"] == RAW_RUNS[scan_id][1]["sample_uuid"]
        provenance = start["provenance"]
        assert provenance["parameters"] == {"scale": 2.0, "detector": "det"}
        assert (provenance["code"]["name"], provenance["code"]["version"]) == ("scaled_sum", "1")
        assert provenance["code"]["module"] == "reprocess_analyses"
        assert provenance["loose_matches"] == []
        assert "supersedes" not in start
        raw_det = np.asarray(lab.store.raw[raw_uid]["primary"].read()["det"], dtype=float)
        assert _total(lab.store.runs[outcome.uid]) == pytest.approx(2 * raw_det.sum())
        sums[scan_id] = outcome.uid
    for sample, scan_ids in (("SA-1", (1, 2)), ("SA-2", (3,))):
        uid = report.uid(f"merged[sample {sample}]")
        start = lab.store.start_document(uid)
        assert sorted(start["parent_uids"]) == sorted(sums[s] for s in scan_ids)
        assert start["reprocess"] == {"campaign": "chain", "procedure": "merged"}
        assert start["provenance"]["parameters"] == {}
        assert start["sample_uuid"] == sample
        expected = sum(_total(lab.store.runs[sums[s]]) for s in scan_ids)
        assert _total(lab.store.runs[uid], "merged") == pytest.approx(expected)
    assert set(lab.store.derived_from(lab.uids[1], recursive=True)) == {
        sums[1],
        report.uid("merged[sample SA-1]"),
    }


def test_a_rerun_saves_nothing_and_a_dry_run_writes_nothing(lab, chain, capsys):
    directory, first, _ = chain
    before = lab.derived_runs()
    # workers=None would start a LocalCluster: everything stored, none starts
    again = lab.reprocess(chain_file(directory), workers=None)
    assert again.dashboard is None
    assert lab.derived_runs() == before
    statuses = {k: o.status for k, o in again.outcomes.items()}
    assert statuses == dict.fromkeys(first.outcomes, "stored")
    assert {k: again.uid(k) for k in first.outcomes} == {k: first.uid(k) for k in first.outcomes}
    assert not again.stale
    header, *rows = again.table().splitlines()
    assert header.split() == [
        "procedure",
        *("tasks", "stored", "loose", "stale", "to", "run", "ran", "failed", "skipped"),
    ]
    assert [r.split() for r in rows] == [
        ["sums", "3", "3", "0", "0", "0", "0", "0", "0"],
        ["merged", "2", "2", "0", "0", "0", "0", "0", "0"],
    ]

    other = chain_file(directory, scale=4)  # other parameters: everything to run
    dry = lab.reprocess(other, dry_run=True)
    assert dry.dry_run
    assert dry.outcomes == {}
    assert {n: (s.to_run, s.stored) for n, s in dry.summary().items()} == {
        "sums": (3, 0),
        "merged": (2, 0),
    }
    header = ["procedure", "tasks", "stored", "loose", "stale", "to", "run"]
    assert dry.table().splitlines()[0].split() == header  # no "ran" column: nothing ran
    code, out, _ = bas(capsys, "reprocess", str(other), "--store", str(lab.directory), "--dry-run")
    assert code == 0
    assert out.splitlines() == [
        "campaign chain: what would run (nothing ran)",
        *dry.table().splitlines(),
    ]
    assert lab.derived_runs() == before


def test_a_version_bump_makes_runs_stale_and_reprocessing_supersedes_them(lab, chain, capsys):
    directory, first, _ = chain
    old_sums = {k: o.uid for k, o in first.outcomes.items() if k.startswith("sums")}
    old_merged = {k: o.uid for k, o in first.outcomes.items() if k.startswith("merged")}
    v2 = chain_file(directory, "scaled_sum_v2", "2")
    store = str(lab.directory)

    code, out, _ = bas(capsys, "stale", str(v2), "--store", store)
    assert code == 1
    lines = out.splitlines()
    for uid in old_sums.values():
        assert f"{uid}  sums: version 1 -> 2" in lines
    for key, uid in old_merged.items():
        parents = lab.store.start_document(uid)["parent_uids"]
        reasons = "; ".join(f"parent {p} is replaced" for p in parents)
        assert f"{uid}  merged: {reasons}" in lines, (key, out)
    assert "5 stale run(s); what reprocessing would do:" in lines

    # killed after the first procedure: its new runs supersede the old ones, whose children
    # are still stale (their parents are replaced), and are what is left to do
    before = lab.derived_runs()
    v2_sums = procedure_file(directory, v2.read_text().split("  merged:")[0], "chain-v2-sums.yaml")
    part = lab.reprocess(v2_sums)
    assert [o.status for o in part.outcomes.values()] == ["ran"] * 3
    code, out, _ = bas(capsys, "stale", str(v2), "--store", store)
    assert code == 1
    assert out.splitlines()[2] == "2 stale run(s); what reprocessing would do:"
    for key, uid in old_merged.items():
        parents = lab.store.start_document(uid)["parent_uids"]
        reasons = "; ".join(f"parent {p} is replaced" for p in parents)
        assert f"{uid}  merged: {reasons}" in out.splitlines(), (key, out)

    report = lab.reprocess(v2)
    assert {n: (s.stored, s.stale, s.ran) for n, s in report.summary().items()} == {
        "sums": (3, 0, 0),
        "merged": (0, 2, 2),
    }
    assert lab.derived_runs() == before + 5  # the old runs stay
    for key, old in {**old_sums, **old_merged}.items():
        new = report.uid(key)
        if key in part.outcomes:  # saved by the first, partial, campaign
            assert new == part.uid(key)
        assert new != old
        assert old in lab.store.runs
        assert lab.store.start_document(new)["supersedes"] == [old]
        assert lab.store.superseded_by(old) == [new]
        assert lab.store.superseded_by(new) == []
    new_sum = lab.store.start_document(report.uid(f"sums[{lab.uids[1]}]"))
    assert new_sum["provenance"]["code"]["version"] == "2"
    assert new_sum["provenance"]["code"]["qualname"] == "scaled_sum_v2"
    new_merged = lab.store.start_document(report.uid("merged[sample SA-2]"))
    assert new_merged["parent_uids"] == [report.uid(f"sums[{lab.uids[3]}]")]

    code, out, _ = bas(capsys, "stale", str(v2), "--store", store)
    assert (code, out.splitlines()[0]) == (0, "nothing stale")

    rescaled = chain_file(directory, "scaled_sum_v2", "2", scale=3)
    code, out, _ = bas(capsys, "stale", str(rescaled), "--store", store)
    assert code == 1
    for raw_uid in lab.uid(1, 2, 3):
        assert f"{report.uid(f'sums[{raw_uid}]')}  sums: parameter scale: 2.0 -> 3.0" in out


# --- loose matching -------------------------------------------------------------------------

LOOSE = """
    name: loose
    procedures:
      lsum:
        analysis: reprocess_analyses:{analysis}
        version: "{version}"
        parameters: {{scale: {scale}}}
        inputs: {{raw: {{scan_id: [5, 6]}}}}
        {loose}
      lmerge:
        analysis: reprocess_analyses:merge_runs
        version: "1"
        inputs: {{procedure: lsum}}
        per: all
"""


def loose_file(directory: Path, analysis: str, version: str, scale: int, loose: str = "") -> Path:
    text = LOOSE.format(analysis=analysis, version=version, scale=scale, loose=loose)
    if analysis == "scaled_sum" and not loose:  # the first campaign: the per-run part only
        text = text.split("      lmerge:")[0]
    name = f"loose-{analysis}-{scale}-{bool(loose)}.yaml"
    return procedure_file(directory, text, name)


def test_loose_matching_reuses_runs_and_is_reported_and_recorded(lab, tmp_path, capsys):
    old = lab.reprocess(loose_file(tmp_path, "scaled_sum", "1", 7))
    old_uids = {k: o.uid for k, o in old.outcomes.items()}
    assert [o.status for o in old.outcomes.values()] == ["ran", "ran"]

    before = lab.derived_runs()
    versions = loose_file(tmp_path, "scaled_sum_v2", "2", 7, "loose: {versions: [scaled_sum]}")
    report = lab.reprocess(versions)
    assert lab.derived_runs() == before + 1  # lmerge only: lsum reused the version 1 runs
    assert {s.task.key: (s.uid, s.ignored) for s in report.loose_matches} == {
        k: (uid, ("version of scaled_sum",)) for k, uid in old_uids.items()
    }
    assert all(report.outcomes[k].status == "loose" for k in old_uids)
    table = report.table()
    assert table.splitlines()[1].split() == ["lsum", "2", "0", "2", "0", "0", "0", "0", "0"]
    for key, uid in old_uids.items():
        assert f"{key}: reused {uid} loosely (version of scaled_sum)" in table
    merged = lab.store.start_document(report.uid("lmerge[all]"))
    assert sorted(merged["parent_uids"]) == sorted(old_uids.values())
    assert sorted(merged["provenance"]["loose_matches"], key=lambda m: m["uid"]) == [
        {"uid": uid, "ignored": ["version of scaled_sum"]} for uid in sorted(old_uids.values())
    ]

    # what a loose match reused is not stale under the loose configuration
    code, out, _ = bas(capsys, "stale", str(versions), "--store", str(lab.directory))
    assert (code, out.splitlines()[0]) == (0, "nothing stale")

    before = lab.derived_runs()
    parameters = loose_file(tmp_path, "scaled_sum", "1", 8, "loose: {parameters: [scale]}")
    again = lab.reprocess(parameters)
    assert lab.derived_runs() == before
    assert {s.task.key: (s.uid, s.ignored) for s in again.loose_matches} == {
        k: (uid, ("parameter scale",)) for k, uid in old_uids.items()
    }
    # the same parents as above: the group run is the one stored (strict)
    assert again.outcomes["lmerge[all]"].status == "stored"
    assert again.uid("lmerge[all]") == report.uid("lmerge[all]")

    strict = lab.reprocess(loose_file(tmp_path, "scaled_sum_v2", "2", 7), dry_run=True)
    row = strict.summary()["lsum"]
    assert (row.tasks, row.stored, row.loose, row.to_run, row.stale) == (2, 0, 0, 2, 2)
    assert {r.reasons for r in strict.stale if r.procedure == "lsum"} == {("version 1 -> 2",)}
    (merge_stale,) = (r for r in strict.stale if r.procedure == "lmerge")
    assert merge_stale.uid == report.uid("lmerge[all]")
    assert sorted(merge_stale.reasons) == sorted(
        f"parent {u} is replaced" for u in old_uids.values()
    )
    assert lab.derived_runs() == before


# --- failures and retries -------------------------------------------------------------------


def test_a_failing_task_is_recorded_its_dependents_skipped_and_the_rest_saved(
    lab, tmp_path, capsys
):
    path = procedure_file(
        tmp_path,
        """
        name: failing
        procedures:
          odd:
            analysis: reprocess_analyses:fails_on_odd_scan
            version: "1"
            parameters: {scale: 3}
            inputs: {raw: {scan_id: [1, 2]}}
          after:
            analysis: reprocess_analyses:merge_runs
            version: "1"
            inputs: {procedure: odd}
          together:
            analysis: reprocess_analyses:merge_runs
            version: "1"
            inputs: {procedure: odd}
            per: all
        """,
    )
    one, two = lab.uid(1, 2)
    before = lab.derived_runs()
    report = lab.reprocess(path)
    statuses = {k: o.status for k, o in report.outcomes.items()}
    assert statuses == {
        f"odd[{one}]": "failed",
        f"odd[{two}]": "ran",
        f"after[{one}]": "skipped",
        f"after[{two}]": "ran",
        "together[all]": "skipped",
    }
    (failed,) = report.failed
    assert (failed.key, failed.attempts) == (f"odd[{one}]", 1)
    assert failed.reason == "AnalysisFailed: scan 1 is odd"
    (record,) = lab.store.failed_analyses("fails_on_odd_scan")
    assert record["uid"] == failed.uid
    assert record["parent_uids"] == [one]
    assert "scan 1 is odd" in record["reason"]
    assert {o.key: o.reason for o in report.skipped} == {
        f"after[{one}]": f"odd[{one}] failed",
        "together[all]": f"odd[{one}] failed",
    }
    table = report.table()
    assert f"odd[{one}]: failed: AnalysisFailed: scan 1 is odd" in table
    assert f"after[{one}]: skipped: odd[{one}] failed" in table
    # odd and after of scan 2, and the failure record (a run with no data, which queries for
    # results hide)
    assert lab.derived_runs() == before + 3
    assert lab.store.start_document(report.uid(f"after[{two}]"))["parent_uids"] == [
        report.uid(f"odd[{two}]")
    ]

    planned = lab.reprocess(path, dry_run=True)  # the failure is known; it would run again
    assert planned.states[f"odd[{one}]"].failed_before == [failed.uid]
    assert planned.states[f"odd[{one}]"].status == "to_run"
    assert planned.states[f"odd[{two}]"].status == "stored"
    code, out, _ = bas(capsys, "stale", str(path), "--store", str(lab.directory))
    assert code == 0  # a failure is not stale: it is missing
    assert f"{failed.uid}  odd[{one}]: recorded as failed; it will run again" in out.splitlines()

    code, out, _ = bas(
        capsys, "reprocess", str(path), "--store", str(lab.directory), "--workers", "0"
    )
    assert code == 1  # it failed again
    assert f"odd[{one}]: failed: AnalysisFailed: scan 1 is odd" in out
    assert f"after[{one}]: skipped: odd[{one}] failed" in out
    assert len(lab.store.failed_analyses("fails_on_odd_scan")) == 2
    assert lab.derived_runs() == before + 4  # one more failure record, nothing else


def test_a_task_that_fails_once_is_saved_by_a_retry(lab, tmp_path):
    attempts = tmp_path / "attempts"
    attempts.mkdir()
    path = procedure_file(
        tmp_path,
        f"""
        name: retried
        retries: 1
        procedures:
          flaky:
            analysis: reprocess_analyses:fails_once
            version: "1"
            parameters: {{directory: "{attempts}"}}
            inputs: {{raw: {{scan_id: 4}}}}
        """,
    )
    report = lab.reprocess(path)
    (outcome,) = report.outcomes.values()
    assert (outcome.status, outcome.attempts) == ("ran", 2)
    assert (attempts / lab.uids[4]).read_text() == "2"
    assert _total_attempts(lab.store.runs[outcome.uid]) == 2
    assert not lab.store.failed_analyses("fails_once")


def _total_attempts(run: Any) -> int:
    return int(np.asarray(run["result"].read()["attempts"])[0])


def test_one_lineage_is_saved_once_and_a_query_that_finds_nothing_shows(lab, tmp_path, capsys):
    path = procedure_file(
        tmp_path,
        """
        name: twins
        procedures:
          twin_a:
            analysis: reprocess_analyses:scaled_sum
            version: "1"
            parameters: {scale: 11}
            inputs: {raw: {scan_id: 5}}
          twin_b:
            analysis: reprocess_analyses:scaled_sum
            version: "1"
            parameters: {scale: 11, detector: det}
            inputs: {raw: {scan_id: 5}}
          nothing:
            analysis: reprocess_analyses:scaled_sum
            version: "1"
            inputs: {raw: {plan_name: no_such_plan}}
          tripled:
            analysis: reprocess_analyses:scaled_sum
            version: "1"
            parameters: {scale: 3}
            inputs: {raw: {scan_id: 5}}
          both:
            analysis: reprocess_analyses:merge_runs
            version: "1"
            inputs: {procedures: [twin_a, tripled]}
        """,
    )
    before = lab.derived_runs()
    report = lab.reprocess(path, progress=True)
    a, b = (report.outcomes[f"twin_{x}[{lab.uids[5]}]"] for x in "ab")
    # both to run when planned; the second finds the first's run when it runs: no duplicate
    assert {s.status for s in report.states.values()} == {"to_run"}
    assert (a.status, b.status, b.uid) == ("ran", "stored", a.uid)
    assert lab.derived_runs() == before + 3  # twin_a, tripled, both
    rows = [line.split() for line in report.table().splitlines()[1:]]
    assert rows[2] == ["nothing", "0", "0", "0", "0", "0", "0", "0", "0"]
    # a per-run procedure reading two procedures gets both of their runs of the raw run
    tripled = report.uid(f"tripled[{lab.uids[5]}]")
    (both,) = (o for k, o in report.outcomes.items() if k.startswith("both"))
    assert sorted(lab.store.start_document(both.uid)["parent_uids"]) == sorted([a.uid, tripled])
    merged = lab.store.runs[both.uid]["merged"].read()
    assert int(np.asarray(merged["runs"])[0]) == 2
    expected = _total(lab.store.runs[a.uid]) + _total(lab.store.runs[tripled])
    assert float(np.asarray(merged["total"])[0]) == pytest.approx(expected)
    assert "twin_b" in capsys.readouterr().err  # its progress bar
