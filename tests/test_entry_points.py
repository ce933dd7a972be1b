"""Pairs and handlers are discoverable through entry points, named by their spec."""

from importlib.metadata import entry_points

import pytest

from bluesky_analysis_store import (
    HDF5_PAIR,
    PAIRS_ENTRY_POINT_GROUP,
    DuplicateSpecError,
    PairRegistry,
    UnknownSpecError,
    WriterHandlerPair,
    default_registry,
)

SHIPPED = {"BAS_HDF5", "BAS_NPY", "BAS_TIFF", "BAS_TABLE_HDF5"}


def test_each_pair_entry_point_is_named_by_its_spec():
    found = {ep.name: ep.load() for ep in entry_points(group=PAIRS_ENTRY_POINT_GROUP)}
    assert set(found) >= SHIPPED
    for name, pair in found.items():
        assert isinstance(pair, WriterHandlerPair)
        assert pair.spec == name


def test_every_handler_is_published_for_databroker_under_its_spec():
    handlers = {ep.name: ep.load() for ep in entry_points(group="databroker.handlers")}
    for spec, pair in default_registry().items():
        assert handlers[spec] is pair.handler, spec


def test_registry_refuses_a_second_pair_for_one_spec():
    registry = PairRegistry([HDF5_PAIR])
    with pytest.raises(DuplicateSpecError, match="'BAS_HDF5' is already registered"):
        registry.register(HDF5_PAIR)
    assert registry["BAS_HDF5"] is HDF5_PAIR


def test_registries_are_independent_instances():
    mine = PairRegistry()
    assert len(mine) == 0
    assert set(default_registry()) >= SHIPPED
    with pytest.raises(UnknownSpecError, match=r"unknown spec 'BAS_HDF5'; registered specs: \[\]"):
        mine["BAS_HDF5"]


def test_registry_maps_for_filler_and_tiled_writer():
    registry = default_registry()
    assert registry.spec_to_mimetype()["BAS_HDF5"] == "application/x-hdf5"
    assert registry.spec_to_mimetype()["BAS_TIFF"] == "image/tiff"
    assert registry.handler_registry()["BAS_NPY"] is registry["BAS_NPY"].handler
