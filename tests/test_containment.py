"""Nothing outside the store is served (issue 11): path escapes through the server.

Against a real ``bas serve`` (the write key registers, the READ-ONLY key reads) and the
embedded store's in-process app (the same app): absolute paths, ``..``, percent-encoded
``..``, other hosts and schemes, symlinks planted inside ``files/`` before and after
registration, and directory assets whose ``relative_path`` climbs out. Then runs whose files
lie outside the store: refused when they are inserted, and nothing left behind.
"""

from __future__ import annotations

import copy
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
from helpers import compose, figure, make_provenance
from served import WRITE_KEY, Server
from targets import Target, embedded_target, served_target

from bluesky_analysis_store import AnalysisStore, UnsafePathError

SECRET = 4242.0


@pytest.fixture(scope="module")
def served(bas_server: Server) -> Iterator[Target]:
    with served_target(bas_server) as target:
        yield target


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    with embedded_target(tmp_path_factory.mktemp("embedded") / "store") as target:
        yield target


def _hdf5(path: Path, value: float) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f["data"] = np.full(4, value)
    return path


def _uri(path: Path | str) -> str:
    return f"file://localhost{path}"


def _array_node(key: str, data_uri: str, *, is_directory: bool = False) -> dict[str, Any]:
    """A registration body: an external HDF5 array (or a directory asset) at ``data_uri``."""
    source = {
        "structure_family": "array",
        "mimetype": "application/x-zarr" if is_directory else "application/x-hdf5",
        "management": "external",
        "parameters": {} if is_directory else {"dataset": "data"},
        "structure": {
            "data_type": {"endianness": "little", "kind": "f", "itemsize": 8, "dt_units": None},
            "chunks": [[4]],
            "shape": [4],
            "dims": None,
            "resizable": False,
        },
        "assets": [
            {
                "data_uri": data_uri,
                "is_directory": is_directory,
                "parameter": "data_uri" if is_directory else "data_uris",
                "num": None if is_directory else 0,
            }
        ],
    }
    return {
        "id": key,
        "structure_family": "array",
        "metadata": {},
        "specs": [],
        "data_sources": [source],
    }


class Attacks:
    """One attacker's session against a target; counts attempts and refusals."""

    def __init__(self, target: Target, outside: Path) -> None:
        self.target = target
        self.outside = outside
        self.attempts = self.refused = 0
        self.container = f"attacks-{secrets.token_hex(4)}"
        response = target.post(
            "metadata/",
            {"id": self.container, "structure_family": "container", "metadata": {}, "specs": []},
        )
        assert response.status_code == 200, response.text
        self.here = target.files / self.container
        self.here.mkdir()
        self.secret = _hdf5(outside / f"secret-{secrets.token_hex(4)}.h5", SECRET)

    def register(self, key: str, data_uri: str, **kwargs: Any) -> Any:
        return self.target.post(f"register/{self.container}", _array_node(key, data_uri, **kwargs))

    def refused_at_registration(self, data_uri: str, **kwargs: Any) -> None:
        self.attempts += 1
        key = secrets.token_hex(4)
        response = self.register(key, data_uri, **kwargs)
        assert response.status_code == 400, (data_uri, response.text)
        assert "accepted: file:// paths inside" in response.text, response.text
        assert key not in self._children()
        self.refused += 1

    def _children(self) -> list[str]:
        response = self.target.get(f"search/{self.container}")
        return [item["id"] for item in response.json()["data"]]

    def asset_id(self, key: str) -> int:
        (source,) = self.target.data_sources(f"{self.container}/{key}")
        return int(source["assets"][0]["id"])

    def refused_on_read(self, route: str, **params: Any) -> None:
        """The read-only key reads ``route``: 403, and the secret is not in the answer."""
        self.attempts += 1
        response = self.target.get(route, **params)
        assert response.status_code == 403, (
            route,
            params,
            response.status_code,
            response.text[:200],
        )
        assert "outside the store" in response.text or "leaves the directory" in response.text
        self.refused += 1


def _path_escapes(target: Target, outside: Path) -> tuple[int, int]:
    attack = Attacks(target, outside)
    files = target.files
    # at registration
    for data_uri in [
        _uri("/etc/passwd"),
        _uri(attack.secret),
        _uri(f"{files}/../../../../../../etc/passwd"),
        _uri(f"{attack.here}/../../{attack.secret.relative_to(attack.secret.anchor)}"),
        _uri(f"{files}/%2E%2E/%2E%2E/%2E%2E/%2E%2E/%2E%2E/etc/passwd"),
        f"file://elsewhere{files}/x.h5",
        "file:etc/passwd",
        f"duckdb:///{outside}/other.duckdb",
        "https://example.org/x.h5",
        _uri(files),  # the whole directory, not a file inside it
    ]:
        attack.refused_at_registration(data_uri)
    attack.refused_at_registration(_uri("/etc"), is_directory=True)
    planted = attack.here / "planted.h5"
    planted.symlink_to(attack.secret)
    attack.refused_at_registration(_uri(planted))
    # a legitimate file, read with the read-only key, then swapped for a symlink pointing out
    legit = _hdf5(attack.here / "legit.h5", 1.0)
    assert attack.register("legit", _uri(legit)).status_code == 200
    node = f"{attack.container}/legit"
    asset = attack.asset_id("legit")
    assert target.get(f"asset/bytes/{node}", id=asset).content == legit.read_bytes()
    np.testing.assert_array_equal(
        np.frombuffer(target.get(f"array/full/{node}").content, dtype="<f8"), np.ones(4)
    )
    # replacing a data source's assets is a registration too
    attack.attempts += 1
    (source,) = target.data_sources(node)
    source = copy.deepcopy(source)
    source["assets"] = [
        {"data_uri": _uri(attack.secret), "is_directory": False, "parameter": "data_uris", "num": 1}
    ]
    response = target.write.put(target.api + f"data_source/{node}", json={"data_source": source})
    assert response.status_code == 400, response.text
    attack.refused += 1
    legit.unlink()
    legit.symlink_to(attack.secret)  # planted after registration: re-checked at read time
    attack.refused_on_read(f"asset/bytes/{node}", id=asset)
    attack.refused_on_read(f"array/full/{node}")
    attack.refused_on_read(f"array/block/{node}", block="0")
    attack.attempts += 1  # tiled's zarr route answers its own way, never with the secret
    zarr = target.read.get(target.api.removesuffix("api/v1/") + f"zarr/v2/{node}/0")
    assert zarr.status_code != 200, zarr.text
    assert str(SECRET).encode() not in zarr.content
    attack.refused += 1
    # a directory asset inside the store, whose relative_path climbs out or follows a symlink
    directory = attack.here / "directory"
    directory.mkdir()
    (directory / "inside.txt").write_text("inside")
    (directory / "leak").symlink_to(attack.secret)
    assert attack.register("directory", _uri(directory), is_directory=True).status_code == 200
    node = f"{attack.container}/directory"
    asset = attack.asset_id("directory")
    response = target.get(f"asset/bytes/{node}", id=asset, relative_path="inside.txt")
    assert response.status_code == 200
    assert response.text == "inside"
    assert target.get(f"asset/manifest/{node}", id=asset).status_code == 200
    for relative in [
        "../../../../../../../etc/passwd",
        f"../../../../../../..{attack.secret}",
        "leak",
        str(attack.secret),
    ]:
        attack.refused_on_read(f"asset/bytes/{node}", id=asset, relative_path=relative)
    return attack.attempts, attack.refused


def test_nothing_outside_the_store_is_served_by_the_server(served, tmp_path, capsys):
    attempts, refused = _path_escapes(served, tmp_path)
    figure(
        capsys,
        "path attacks",
        "bas serve: assets outside files/ (absolute, '..', %2E%2E, other hosts and schemes, "
        "symlinks planted before and after registration, a directory asset's relative_path) "
        "registered with the write key are refused (400); read with the read-only key through "
        "asset/bytes, array, block and zarr: refused (403), the file never sent",
        backend=served.name,
        attempts=attempts,
        refused=refused,
    )


def test_nothing_outside_the_store_is_served_by_the_embedded_store(embedded, tmp_path, capsys):
    attempts, refused = _path_escapes(embedded, tmp_path)
    figure(
        capsys,
        "path attacks",
        "the embedded store's in-process app, the same attacks: refused",
        backend="embedded",
        attempts=attempts,
        refused=refused,
    )


# --- runs whose files lie outside the store -----------------------------------------------------


def _files(directory: Path) -> list[Path]:
    """The files under ``directory`` (directories a refused run made may stay: see
    test_writers_dict_root_outside_the_store)."""
    return sorted(p for p in directory.rglob("*") if not p.is_dir())


def test_embedded_root_outside_the_store_is_refused_at_open(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    for root in [outside, tmp_path / "s" / "files" / ".." / "elsewhere"]:
        with pytest.raises(UnsafePathError, match="outside the embedded store's file directory"):
            AnalysisStore.open(tmp_path / "s", root=root)
        assert not (tmp_path / "s").exists(), "nothing may be created"
    (tmp_path / "s" / "files").mkdir(parents=True)
    (tmp_path / "s" / "files" / "link").symlink_to(outside)
    with pytest.raises(UnsafePathError, match=r"root=.*link.*resolves to"):
        AnalysisStore.open(tmp_path / "s", root=tmp_path / "s" / "files" / "link")
    inside = tmp_path / "s" / "files" / "derived"
    inside.mkdir()
    with AnalysisStore.open(tmp_path / "s", root=inside) as store:
        uid = store.save([{"p": {"x": np.arange(3.0)}}], {}, provenance=make_provenance())
        np.testing.assert_array_equal(store[uid]["p"]["x"].read(), [np.arange(3.0)])


def _refused_and_nothing_left(store: AnalysisStore, outside: Path, **save: Any) -> None:
    provenance = make_provenance(parameters={"outside": secrets.token_hex(4)})
    before = _files(store.root), _files(outside)  # e.g. the root's lock file
    with pytest.raises(Exception, match="outside the store"):
        store.save([{"p": {"image": np.ones((2, 3))}}], {}, provenance=provenance, **save)
    assert store.with_lineage(provenance.lineage_hash(), include_incomplete=True) == []
    assert (_files(store.root), _files(outside)) == before, "files of the refused run are left"


def test_served_store_whose_root_is_outside_the_servers_storage(bas_server, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    with AnalysisStore.open(bas_server.uri, api_key=WRITE_KEY, root=outside, spool=False) as store:
        _refused_and_nothing_left(store, outside, writers={"image": "BAS_HDF5"})


def test_writers_dict_root_outside_the_store(embedded, served, tmp_path):
    from bluesky_analysis_store import HDF5Writer

    for target in (embedded, served):
        outside = tmp_path / target.name
        outside.mkdir()
        entry = {"writer": HDF5Writer, "spec": "BAS_HDF5", "root": str(outside)}
        _refused_and_nothing_left(target.store, outside, writers={"image": entry})


def test_inserted_documents_that_point_outside_are_refused(embedded, tmp_path):
    """``store.insert`` of documents whose stream resource points outside: refused at that
    document, and the run is never complete."""
    run = compose(
        [{"p": {"image": np.ones((2, 3))}}],
        {},
        root=tmp_path,
        writers={"image": "BAS_HDF5"},
        provenance=make_provenance(parameters={"insert": "outside"}),
    )
    inserted: list[str] = []

    def insert_all() -> None:
        for name, doc in run:
            embedded.store.insert(name, doc)
            inserted.append(name)

    with pytest.raises(Exception, match="outside the store"):
        insert_all()
    assert "stop" not in inserted
    lineage = run.documents[0][1]["lineage_hash"]
    assert embedded.store.with_lineage(lineage) == []
    if run.uid in embedded.store:  # the start went in: the run is left incomplete
        assert not embedded.store[run.uid].metadata.get("stop")
