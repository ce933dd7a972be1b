"""Peer document streams (test_peer_streams.py): where they come from, and an independent reading
of what each holds, from its documents and its data files.

The peers are other projects' test streams, which nobody here wrote: bluesky-tiled-plugins'
TiledWriter test documents (in its sdist only; ``make peers`` fetches the sdist of the installed
version into ``.venv/peers/``), suitcase-utils' ``example_data`` fixture (installed) and
event-model's composers. Nothing of theirs is copied here: their documents, data files and
fixtures are loaded at test time.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import json
import os
import posixpath
import re
import sys
import time
import uuid
import warnings
from collections.abc import Callable, Iterator, Sequence
from importlib.metadata import version
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

Documents = list[tuple[str, dict[str, Any]]]

#: The parameter a peer case gets when bluesky-tiled-plugins' tests were not fetched.
MISSING = "not-fetched"


# --- where the peers are ---------------------------------------------------------------------


def btp_tests() -> Path:
    """``tests/`` of bluesky-tiled-plugins' sdist, the installed version (it may be missing)."""
    peers = Path(os.environ.get("BAS_PEERS_DIR") or Path(sys.prefix) / "peers")
    return peers / f"bluesky_tiled_plugins-{version('bluesky-tiled-plugins')}" / "tests"


def missing_btp_message() -> str:
    return (
        f"bluesky-tiled-plugins' tests are not in {btp_tests()} (its wheel has none; its sdist "
        "has them): run `make peers` (`make test` and `make pytest` do it), which fetches the "
        "sdist of the installed version"
    )


def btp_examples() -> list[str]:
    """The names of bluesky-tiled-plugins' example streams (``tests/examples/*.json``), or
    ``[MISSING]``, so that the peer tests fail, saying how to fetch them."""
    names = sorted(path.stem for path in btp_tests().glob("examples/*.json"))
    return names or [MISSING]


def import_file(path: Path, name: str) -> ModuleType:
    """Import the module in ``path`` under ``name`` (a peer's test module, not on sys.path)."""
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def btp_conftest() -> ModuleType | None:
    """bluesky-tiled-plugins' ``tests/conftest.py`` (its fixtures), or None if not fetched."""
    path = btp_tests() / "conftest.py"
    return import_file(path, "btp_peer_conftest") if path.is_file() else None


def btp_documents(example: str, root: Path) -> Documents:
    """bluesky-tiled-plugins' example stream ``example``, its files' root templated to ``root``
    (by its own ``render_templated_documents``, as its tests do)."""
    render = import_file(btp_tests() / "examples" / "render.py", "btp_peer_render")
    items = render.render_templated_documents(f"{example}.json", str(root))
    return [(item["name"], item["doc"]) for item in items]


# --- sending a stream ------------------------------------------------------------------------


def with_provenance(documents: Documents, case: str) -> Documents:
    """``documents`` with only the start given valid provenance (an analysis store refuses a
    run without it); every other document is the peer's own, unchanged."""
    from helpers import make_provenance

    from bluesky_analysis_store import ProvenancePolicy
    from bluesky_analysis_store.provenance._start_metadata import RESERVED_MD_KEYS, start_metadata

    (name, start), rest = documents[0], documents[1:]
    assert name == "start", f"a peer stream begins with {name!r}"
    provenance = make_provenance(parameters={"peer_case": case, "peer_run": start["uid"]})
    md = {key: value for key, value in start.items() if key not in RESERVED_MD_KEYS}
    metadata = start_metadata(md, provenance, ProvenancePolicy())
    return [("start", {"uid": start["uid"], "time": start["time"], **metadata}), *rest]


def feed(insert: Callable[[str, dict[str, Any]], Any], documents: Documents) -> Exception | None:
    """Send a copy of each document (writers change what they are given) and return the first
    error, or None. After an error the run is closed with a failing stop (refused documents
    poison a run; only such a stop may end it), so that nothing of it stays open."""
    for name, doc in copy.deepcopy(documents):
        try:
            insert(name, doc)
        except Exception as error:
            stop = {
                "uid": str(uuid.uuid4()),
                "run_start": documents[0][1]["uid"],
                "time": time.time(),
                "exit_status": "fail",
                "reason": f"refused: {error!s:.200}",
            }
            with contextlib.suppress(Exception):  # the error above is what the test reports
                insert("stop", stop)
            return error
    return None


# --- what a stream holds, read from its documents and its files ------------------------------


def _events(name: str, doc: dict[str, Any]) -> Iterator[dict[str, Any]]:
    import event_model

    if name == "event":
        yield doc
    elif name == "event_page":
        yield from event_model.unpack_event_page(doc)
    else:  # bulk_events: {stream name: [events]}, deprecated
        for page in event_model.bulk_events_to_event_pages(doc):
            yield from event_model.unpack_event_page(page)


def _path(uri: str) -> Path:
    from tiled.utils import path_from_uri

    return Path(path_from_uri(uri))


def _hdf5(path: Path | str, dataset: str, index: Any = ()) -> np.ndarray:
    import h5py

    with h5py.File(path, "r") as file:
        return np.asarray(file[dataset][index])


def _stream_rows(stream_resource: dict[str, Any], start: int, stop: int) -> list[np.ndarray]:
    """Rows ``start:stop`` of a stream resource's data (one frame per index, as every peer
    stream here has), read from its files directly."""
    mimetype, parameters = stream_resource["mimetype"], stream_resource["parameters"]
    path = _path(stream_resource["uri"])
    if mimetype == "application/x-hdf5":
        return list(_hdf5(path, parameters["dataset"], slice(start, stop)))
    if mimetype == "multipart/related;type=image/tiff":
        import tifffile

        return [
            tifffile.imread(path / parameters["template"].format(i)) for i in range(start, stop)
        ]
    raise AssertionError(f"no reference reader for mimetype {mimetype!r}: add one to {__file__}")


def _datum_value(resource: dict[str, Any], datum: dict[str, Any], seq_num: int) -> np.ndarray:
    """A legacy datum's value, read from its resource's files: the datum's index is its
    ``point_number`` or ``frame`` (else the event's position); a resource with an area
    detector ``template`` holds one file per point (``template % (path, filename, point)``)."""
    kwargs, datum_kwargs, spec = (
        resource["resource_kwargs"],
        datum["datum_kwargs"],
        resource["spec"],
    )
    path = resource["resource_path"]
    if resource.get("root"):
        path = posixpath.join(resource["root"], path.lstrip("/"))
    index = datum_kwargs.get("point_number", datum_kwargs.get("frame", seq_num - 1))
    one_file_per_point = "template" in kwargs
    if one_file_per_point:
        path = kwargs["template"] % (path, kwargs["filename"], index)
    if "HDF5" in spec:
        dataset = datum_kwargs.get("dataset") or kwargs.get("dataset") or "/entry/data/data"
        return _hdf5(path, dataset, () if one_file_per_point else index)
    if "TIFF" in spec and one_file_per_point:
        import tifffile

        return np.asarray(tifffile.imread(path))
    raise AssertionError(f"no reference reader for resource spec {spec!r}: add one to {__file__}")


class Column:
    """One data key of one stream: its declaration and its rows, in the order they came."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.rows: list[Any] = []


def reference_streams(documents: Documents) -> dict[str, dict[str, Column]]:
    """What each stream of a run holds, ``{stream: {key: Column}}``, read from the documents
    (values inside events) and from the data files they point to (external values)."""
    import event_model

    descriptors: dict[str, dict[str, Any]] = {}
    resources: dict[str, dict[str, Any]] = {}
    datums: dict[str, dict[str, Any]] = {}
    stream_resources: dict[str, dict[str, Any]] = {}
    streams: dict[str, dict[str, Column]] = {}
    pending: list[tuple[list[Any], int, str, int]] = []  # (rows, row, datum id, seq_num)
    for name, doc in documents:
        if name == "descriptor":
            descriptors[doc["uid"]] = doc
            stream = streams.setdefault(doc["name"], {})
            for key, spec in doc["data_keys"].items():
                stream.setdefault(key, Column(spec))
        elif name == "resource":
            resources[doc["uid"]] = doc
        elif name in ("datum", "datum_page"):
            for datum in [doc] if name == "datum" else event_model.unpack_datum_page(doc):
                datums[datum["datum_id"]] = datum
        elif name == "stream_resource":
            stream_resources[doc["uid"]] = doc
        elif name == "stream_datum":
            resource = stream_resources[doc["stream_resource"]]
            column = streams[descriptors[doc["descriptor"]]["name"]][resource["data_key"]]
            indices = doc["indices"]
            column.rows.extend(_stream_rows(resource, indices["start"], indices["stop"]))
        elif name in ("event", "event_page", "bulk_events"):
            for event in _events(name, doc):
                descriptor = descriptors[event["descriptor"]]
                for key, value in event["data"].items():
                    rows = streams[descriptor["name"]][key].rows
                    external = "external" in descriptor["data_keys"][key]
                    if external and not (event.get("filled") or {}).get(key):
                        pending.append((rows, len(rows), value, event["seq_num"]))
                    rows.append(value)
    for rows, row, datum_id, seq_num in pending:  # datums may come after their events
        datum = datums[datum_id]
        rows[row] = _datum_value(resources[datum["resource"]], datum, seq_num)
    return streams


# --- reading it back -------------------------------------------------------------------------


def _squeezed(shape: Sequence[int]) -> tuple[int, ...]:
    return tuple(n for n in shape if n != 1)


def assert_column(where: str, actual: Any, column: Column) -> None:
    """``actual`` (read back) holds ``column``'s rows: as many rows, the same shape per row (up to
    dimensions of length 1: a frame-per-point dimension may or may not be kept), the declared
    ``dtype_numpy`` (else the dtype of what was sent) and equal values."""
    actual = np.asarray(actual)
    try:
        expected = np.stack([np.asarray(row) for row in column.rows]) if column.rows else None
    except ValueError as error:
        raise AssertionError(f"{where}: the rows sent are ragged ({error})") from None
    assert actual.shape[:1] == (len(column.rows),), (
        f"{where}: {actual.shape[0] if actual.ndim else 'no'} rows read back, "
        f"{len(column.rows)} sent"
    )
    if expected is None:
        return
    assert _squeezed(actual.shape[1:]) == _squeezed(expected.shape[1:]), (
        f"{where}: read back with shape {actual.shape}; sent rows of shape {expected.shape[1:]}"
    )
    declared = column.spec.get("dtype_numpy")
    wanted = np.dtype(declared) if isinstance(declared, str) else expected.dtype
    same = actual.dtype.kind == wanted.kind if wanted.kind == "U" else actual.dtype == wanted
    assert same, f"{where}: read back as {actual.dtype}, sent as {wanted}"
    np.testing.assert_array_equal(actual.reshape(expected.shape), expected, err_msg=where)


def _json(doc: Any) -> Any:
    return json.loads(json.dumps(doc))


def assert_read_back(run: Any, documents: Documents) -> None:
    """Every stream and data key of ``run`` (a BlueskyRun client) holds what ``documents`` sent,
    through ``run[stream][key].read()`` and ``run[stream].read()``; ``run.documents()`` gives back
    the start and stop sent and every descriptor."""
    expected = reference_streams(documents)
    assert sorted(run) == sorted(expected), f"streams {sorted(run)}; sent {sorted(expected)}"
    for stream, columns in expected.items():
        node = run[stream]
        with warnings.catch_warnings():
            # TiledWriter (2.0.12, _internal_dims) names equal-sized axes of an array kept in
            # the events alike, so a square image is ('time', 'dim_int_1', 'dim_int_1'), and
            # xarray warns; a bare TiledWriter stores it the same, and the values are right
            warnings.filterwarnings("ignore", "Duplicate dimension names", UserWarning)
            dataset = node.read()
        for key, column in columns.items():
            assert_column(f"{stream}/{key}", node[key].read(), column)
            assert_column(f"{stream}.read()[{key!r}]", dataset[key].values, column)
    returned = list(run.documents())
    names = [name for name, _ in returned]
    assert names[0] == "start", f"run.documents() gave {names}"
    assert names[-1] == "stop", f"run.documents() gave {names}"
    assert returned[0][1] == _json(documents[0][1]), "run.documents(): the start differs"
    stop = next(doc for name, doc in reversed(documents) if name == "stop")
    assert returned[-1][1] == _json(stop), "run.documents(): the stop differs"
    sent = {doc["uid"] for name, doc in documents if name == "descriptor"}
    assert {doc["uid"] for name, doc in returned if name == "descriptor"} == sent


def refusal_matches(error: BaseException, pattern: str) -> bool:
    """Whether ``error`` is the typed refusal of a malformed stream, naming what ``pattern``
    says (the key or the rule)."""
    from bluesky_analysis_store import InvalidDocumentError

    return isinstance(error, InvalidDocumentError) and re.search(pattern, str(error)) is not None
