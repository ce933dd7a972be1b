"""Peer suites: document streams that other projects' tests send a TiledWriter, each sent
unchanged through our gate and writer into a raw container (``raw-writer``) and, with only its
start given provenance, through ``store.insert`` into an analysis store (``store-insert``), then
read back with tiled's client and compared with the documents and their data files.

Peers (see peers.py): bluesky-tiled-plugins' TiledWriter test documents (``btp``), suitcase-utils'
``example_data`` fixture (``suitcase``) and event-model's ``compose_run`` (``event-model``). Every
peer stream is accepted and reads back equal, except those in ``MALFORMED_PEER_STREAMS``, which
are refused with a typed error.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import numpy as np
import peers
import pytest
from suitcase.utils.tests import conftest as suitcase_conftest

from bluesky_analysis_store import AnalysisStore

#: Peer streams that are malformed (bugs of the peers' own fixtures): case (a pattern) -> (why it
#: is refused, a regular expression its refusal must match). Every other peer stream must be
#: accepted and read back equal; this is the one place that lists exceptions.
MALFORMED_PEER_STREAMS: dict[str, tuple[str, str]] = {
    "btp:external_assets_bytes": (
        "det-blob-single's stream datums cover 1 row while det-blob-multi's cover 3 and the stop "
        "claims 3; and its blobs are opaque bytes, not the uint8 arrays of shape [1] that the "
        "descriptor declares (after a bare TiledWriter, reading the stream fails)",
        r"det-blob|num_events",
    ),
    "btp:internal_events": (
        "'empty' declares shape [] (a scalar) but carries [] in every event, and "
        "'ragged_padded' declares shape [4] but its second event carries 2 values (a bare "
        "TiledWriter pads them with NaN, as float64)",
        r"'empty'|'ragged_padded'",
    ),
    "suitcase:multi_stream_one_descriptor_plan:event_page:*": (
        "its event_page collector packs every event of the run into one page "
        "(pack_event_page(*events)), under the first event's descriptor: the baseline and "
        "primary rows land in one stream, and the stop's num_events no longer matches",
        r"num_events|descriptor",
    ),
    "suitcase:*:*:_make_image_list": (
        "the detector's value is a nested list ([[1] * 10] * 10), which ophyd describes by its "
        "outer length: the descriptor declares shape [10] for rows of shape [10, 10] (a bare "
        "TiledWriter stores each row as the text of a list of arrays)",
        r"'direct_img_list'",
    ),
    "suitcase:*:*:images": (
        "holds _make_image_list's detector (see above) beside _make_image's",
        r"'direct_img_list'|'direct_img'",
    ),
    "suitcase:multi_stream_one_descriptor_plan:*:_make_image": (
        "the baseline descriptor describes the image detector by its value before any trigger "
        "(dtype 'integer', shape []), but its baseline events carry 10 x 10 images (a bare "
        "TiledWriter fails on them with pyarrow's ArrowInvalid)",
        r"'direct_img'",
    ),
}

PATHS = ["raw-writer", "store-insert"]

#: How each peer stream that ran ended as it should: test node id -> "accepted" or "refused".
OUTCOMES: dict[str, str] = {}


def malformed(case: str) -> tuple[str, str] | None:
    """``(why, pattern)`` if ``case`` is a malformed peer stream (the reasons and patterns of
    every entry that names it, joined), else None."""
    found = [value for key, value in MALFORMED_PEER_STREAMS.items() if fnmatchcase(case, key)]
    if not found:
        return None
    return "; ".join(why for why, _ in found), "|".join(f"(?:{pattern})" for _, pattern in found)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AnalysisStore]:
    """One embedded analysis store for every peer stream, with a raw container beside it."""
    with AnalysisStore.open(tmp_path_factory.mktemp("peers") / "store", raw="raw") as opened:
        yield opened


def check_peer_stream(
    request: pytest.FixtureRequest,
    store: AnalysisStore,
    case: str,
    documents: peers.Documents,
    path: str,
) -> None:
    """Send ``documents`` along ``path``; a valid stream must be accepted and read back equal,
    a malformed one refused (see ``MALFORMED_PEER_STREAMS``)."""
    from bluesky_analysis_store import analysis_sink

    if path == "raw-writer":  # our writer in place of a bare TiledWriter, on a raw container
        container, insert = store.raw, analysis_sink(store.raw)
    else:
        documents = peers.with_provenance(documents, case)
        container, insert = store.runs, store.insert
    error = peers.feed(insert, documents)
    uid = documents[0][1]["uid"]
    refused = malformed(case)
    if refused is not None:
        reason, pattern = refused
        assert error is not None, f"{case} is malformed ({reason}) but was accepted"
        assert peers.refusal_matches(error, pattern), (
            f"{case} is malformed ({reason}); its refusal should be an InvalidDocumentError "
            f"matching {pattern!r}, got {type(error).__name__}: {error}"
        )
        stop = container[uid].metadata.get("stop") if uid in container else None
        assert (stop or {}).get("exit_status") != "success", f"{case} looks complete"
        OUTCOMES[request.node.nodeid] = "refused"
        return
    if error is not None:
        pytest.fail(f"{case} is a valid stream but was refused: {type(error).__name__}: {error}")
    run = container[uid]
    assert run.metadata["stop"]["exit_status"] == "success"
    peers.assert_read_back(run, documents)
    OUTCOMES[request.node.nodeid] = "accepted"


# --- bluesky-tiled-plugins: its TiledWriter tests' example documents and their data files ------

_btp_conftest = peers.btp_conftest()
if _btp_conftest is not None:
    # its own fixture: writes the HDF5, TIFF and binary files its example documents point to
    external_assets_folder = _btp_conftest.external_assets_folder
else:

    @pytest.fixture(scope="module")
    def external_assets_folder() -> str:
        pytest.fail(peers.missing_btp_message())


@pytest.fixture(scope="module")
def btp_root(store: AnalysisStore, external_assets_folder: str) -> Path:
    """bluesky-tiled-plugins' data files, copied into the store's files (tiled reads nothing
    outside them); its example documents are templated to this root, as its tests do."""
    root = store.root / "peers" / "bluesky-tiled-plugins"
    shutil.copytree(external_assets_folder, root)
    return root


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("example", peers.btp_examples(), ids=lambda name: f"btp:{name}")
def test_bluesky_tiled_plugins_examples(
    request: pytest.FixtureRequest, store: AnalysisStore, btp_root: Path, example: str, path: str
) -> None:
    if example == peers.MISSING:
        pytest.fail(peers.missing_btp_message())
    documents = peers.btp_documents(example, btp_root)
    check_peer_stream(request, store, f"btp:{example}", documents, path)


# --- suitcase-utils: example_data (plans x detectors x event forms) -----------------------------


@pytest.fixture(scope="module")
def RE() -> Any:  # noqa: N802  (the name suitcase's generate_data asks for)
    """One RunEngine for suitcase's ``generate_data`` (bluesky's own ``RE`` fixture runs each case
    twice, for ``call_returns_result``, which changes no document)."""
    from bluesky import RunEngine

    return RunEngine({})


# suitcase-utils' fixtures, used by name (example_data asks for the others)
detector_list = suitcase_conftest.detector_list
event_type = suitcase_conftest.event_type
example_data = suitcase_conftest.example_data
generate_data = suitcase_conftest.generate_data
plan_type = suitcase_conftest.plan_type


def suitcase_case(request: pytest.FixtureRequest) -> str:
    """``suitcase:PLAN:EVENT_TYPE:DETECTORS``, from the parameters of suitcase's fixtures."""
    params = request.node.callspec.params
    detectors = getattr(params["detector_list"], "__name__", "?").replace("<lambda>", "images")
    return f"suitcase:{params['plan_type'].__name__}:{params['event_type']}:{detectors}"


@pytest.mark.parametrize("path", PATHS)
def test_suitcase_example_data(
    store: AnalysisStore,
    example_data: Callable[..., peers.Documents],
    request: pytest.FixtureRequest,
    path: str,
) -> None:
    documents = [(name, dict(doc)) for name, doc in example_data()]
    check_peer_stream(request, store, suitcase_case(request), documents, path)


# --- event-model: compose_run's own streams --------------------------------------------------


def _events_case(files: Path, pages: bool) -> peers.Documents:
    import event_model

    run = event_model.compose_run(metadata={"peer": "event-model"})
    keys = {
        "x": {"source": "sim", "dtype": "number", "shape": []},
        "n": {"source": "sim", "dtype": "integer", "shape": []},
        "counts": {"source": "sim", "dtype": "array", "shape": [3], "dtype_numpy": "<i8"},
        "frame": {"source": "sim", "dtype": "array", "shape": [2, 3], "dtype_numpy": "<f8"},
        "label": {"source": "sim", "dtype": "string", "shape": []},
    }
    descriptor = run.compose_descriptor(name="primary", data_keys=keys)
    rows = [
        {
            "x": 1.5 * i,
            "n": i,
            "counts": [i, i + 1, i + 2],
            "frame": [[1.0, 2.0, 0.5], [3.0, float(i), 0.25]],
            "label": f"point {i}",
        }
        for i in range(3)
    ]
    stamps = [dict.fromkeys(keys, 1.0) for _ in rows]
    documents: peers.Documents = [
        ("start", run.start_doc),
        ("descriptor", descriptor.descriptor_doc),
    ]
    if pages:
        page = descriptor.compose_event_page(
            data={key: [row[key] for row in rows] for key in keys},
            timestamps={key: [1.0] * len(rows) for key in keys},
            seq_num=[1, 2, 3],
        )
        documents.append(("event_page", page))
    else:
        documents += [
            ("event", descriptor.compose_event(data=row, timestamps=stamp))
            for row, stamp in zip(rows, stamps, strict=True)
        ]
    return [*documents, ("stop", run.compose_stop())]


def _hdf5_file(files: Path, name: str) -> Path:
    import h5py

    path = files / f"{name}.h5"
    data = np.random.default_rng(7).integers(0, 1000, size=(3, 4, 5)).astype("<i4")
    with h5py.File(path, "w") as file:
        file.create_dataset("data", data=data)
    return path


def _stream_only_case(files: Path) -> peers.Documents:
    """StreamResource/StreamDatum only: event-model's stop says num_events {primary: 0}."""
    import event_model

    path = _hdf5_file(files, "stream-only")
    run = event_model.compose_run(metadata={"peer": "event-model"})
    keys = {
        "image": {
            "source": "file",
            "dtype": "array",
            "shape": [4, 5],
            "dtype_numpy": "<i4",
            "external": "STREAM:",
        }
    }
    descriptor = run.compose_descriptor(name="primary", data_keys=keys)
    resource = run.compose_stream_resource(
        mimetype="application/x-hdf5",
        uri=path.as_uri(),
        data_key="image",
        parameters={"dataset": "/data", "chunk_shape": [1, 4, 5]},
    )
    datums = [
        resource.compose_stream_datum(  # seq_nums as the RunEngine fills them in
            indices={"start": start, "stop": stop},
            seq_nums={"start": start + 1, "stop": stop + 1},
            descriptor=descriptor.descriptor_doc,
        )
        for start, stop in ((0, 2), (2, 3))
    ]
    return [
        ("start", run.start_doc),
        ("descriptor", descriptor.descriptor_doc),
        ("stream_resource", resource.stream_resource_doc),
        *(("stream_datum", datum) for datum in datums),
        ("stop", run.compose_stop()),
    ]


def _resource_case(files: Path, *, datum_page: bool) -> peers.Documents:
    """A legacy HDF5 Resource and its datums (a datum_page, or datums naming the dataset)."""
    import event_model

    path = _hdf5_file(files, "datum-page" if datum_page else "datum-dataset")
    run = event_model.compose_run(metadata={"peer": "event-model"})
    keys = {
        "image": {
            "source": "file",
            "dtype": "array",
            "shape": [4, 5],
            "dtype_numpy": "<i4",
            "external": "FILESTORE:",
        }
    }
    descriptor = run.compose_descriptor(name="primary", data_keys=keys)
    resource = run.compose_resource(
        spec="HDF5",
        root=str(path.parent),
        resource_path=path.name,
        resource_kwargs={"dataset": "/data"} if datum_page else {},
    )
    documents: peers.Documents = [
        ("start", run.start_doc),
        ("descriptor", descriptor.descriptor_doc),
        ("resource", resource.resource_doc),
    ]
    if datum_page:
        page = resource.compose_datum_page(datum_kwargs={"point_number": [0, 1, 2]})
        documents.append(("datum_page", page))
        datum_ids = list(page["datum_id"])
    else:
        datums = [
            resource.compose_datum(datum_kwargs={"dataset": "/data", "point_number": i})
            for i in range(3)
        ]
        documents += [("datum", datum) for datum in datums]
        datum_ids = [datum["datum_id"] for datum in datums]
    page = descriptor.compose_event_page(
        data={"image": datum_ids},
        timestamps={"image": [1.0, 2.0, 3.0]},
        seq_num=[1, 2, 3],
        filled={"image": [False, False, False]},
    )
    return [*documents, ("event_page", page), ("stop", run.compose_stop())]


EVENT_MODEL_CASES: dict[str, Callable[[Path], peers.Documents]] = {
    "events": lambda files: _events_case(files, pages=False),
    "event_page": lambda files: _events_case(files, pages=True),
    "stream_only": _stream_only_case,
    "datum_page": lambda files: _resource_case(files, datum_page=True),
    "datum_kwargs_dataset": lambda files: _resource_case(files, datum_page=False),
}


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("case", sorted(EVENT_MODEL_CASES), ids=lambda name: f"event-model:{name}")
def test_event_model_compose_run(
    request: pytest.FixtureRequest, store: AnalysisStore, case: str, path: str
) -> None:
    files = store.root / "peers" / "event-model" / f"{case}-{path}"
    files.mkdir(parents=True)
    documents = EVENT_MODEL_CASES[case](files)
    check_peer_stream(request, store, f"event-model:{case}", documents, path)


def test_malformed_list_names_existing_peer_streams() -> None:
    """No stale entry: each malformed case names an example, plan or detector the peers have."""
    if peers.btp_examples() == [peers.MISSING]:
        pytest.fail(peers.missing_btp_message())
    for case in MALFORMED_PEER_STREAMS:
        peer, *names = case.split(":")
        if peer == "btp":
            assert names[0] in peers.btp_examples(), (
                f"{case}: no such bluesky-tiled-plugins example"
            )
            continue
        assert peer == "suitcase", f"{case}: unknown peer"
        plan, _, detectors = names
        for name in (plan, detectors):
            known = name in ("*", "images") or hasattr(suitcase_conftest, name)
            assert known, f"{case}: suitcase-utils has no {name!r}"


def test_peer_stream_counts(request: pytest.FixtureRequest, capsys: pytest.CaptureFixture) -> None:
    """Runs last in this module: every peer stream that ran ended as it should (accepted and
    read back equal, or refused as malformed); reports how many of each."""
    from helpers import figure

    ran = [
        item.nodeid
        for item in request.session.items
        if item.nodeid.startswith(request.node.nodeid.split("::")[0] + "::")
        and item.originalname in PEER_TESTS
    ]
    missing = [nodeid for nodeid in ran if nodeid not in OUTCOMES]
    assert ran, "no peer stream ran in this session"
    assert not missing, f"{len(missing)} peer stream(s) did not end as they should: {missing[:5]}"
    outcomes = list(OUTCOMES.values())
    counts = {outcome: outcomes.count(outcome) for outcome in ("accepted", "refused")}
    figure(
        capsys,
        "peers",
        "every peer stream (bluesky-tiled-plugins' TiledWriter test documents, suitcase-utils' "
        "example_data, event-model's compose_run), sent unchanged through our writer and, with "
        "provenance, through store.insert, is stored and reads back equal, or is malformed and "
        "refused with a typed error",
        streams=len(ran),
        accepted=counts["accepted"],
        refused_as_malformed=counts["refused"],
    )


PEER_TESTS = (
    "test_bluesky_tiled_plugins_examples",
    "test_suitcase_example_data",
    "test_event_model_compose_run",
)
