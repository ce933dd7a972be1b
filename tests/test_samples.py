"""The sample metadata packet: protected keys survive resets, sample uuids are queryable."""

import re

import pytest
from helpers import compose

from bluesky_analysis_store import AnalysisInputError, MetadataPacket, analysis_sink

SA_UUID = re.compile(r"SA-[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


def test_set_sample_assigns_an_sa_uuid_and_returns_what_other_servers_need():
    orchestrator = MetadataPacket(profile="orchestrator")
    sample = orchestrator.set_sample("Cu foil", sample_composition={"Cu": 1.0})
    assert SA_UUID.fullmatch(sample["sample_uuid"])
    assert sample == {
        "sample_name": "Cu foil",
        "sample_composition": {"Cu": 1.0},
        "sample_uuid": sample["sample_uuid"],
    }
    # Passed unchanged to another server, the same uuid is used there.
    instrument = MetadataPacket(profile="saxs")
    assert instrument.set_sample(**sample) == sample
    assert instrument["sample_uuid"] == orchestrator["sample_uuid"]
    with pytest.raises(AnalysisInputError, match="set_sample needs one sample name"):
        instrument.set_sample("other name", **sample)
    with pytest.raises(AnalysisInputError, match="set_sample needs one sample name"):
        instrument.set_sample(sample_composition="Cu")


def test_each_new_sample_gets_a_new_uuid():
    packet = MetadataPacket()
    first = packet.set_sample("a")["sample_uuid"]
    second = packet.set_sample("b")["sample_uuid"]
    assert first != second
    assert packet["sample_name"] == "b"


def test_reset_keeps_protected_keys_and_drops_transient_ones():
    packet = MetadataPacket(profile="iss", system_serial="SN-7")
    packet.set_sample("Cu foil", campaign_name="edge scans")
    packet["exposure_note"] = "beam dumped once"
    packet.reset()
    assert "exposure_note" not in packet
    assert packet["sample_name"] == "Cu foil"
    assert packet["campaign_name"] == "edge scans"
    assert packet["profile"] == "iss"
    assert packet["system_serial"] == "SN-7"


def test_afl_regression_version_survives_every_reset():
    """AFL lost its version key after the first task because it was not protected."""
    from bluesky_analysis_store import __version__

    packet = MetadataPacket()
    for _ in range(3):
        packet["transient"] = 1
        packet.reset()
    assert packet["package_version"] == __version__


def test_afl_regression_extra_set_sample_keys_survive_reset():
    """AFL wrote extra set_sample keys before extending the protected list, and lost them."""
    packet = MetadataPacket()
    packet.set_sample("s1", beamtime="2026-3", holder_slot=4)
    packet.reset()
    assert packet["beamtime"] == "2026-3"
    assert packet["holder_slot"] == 4
    assert packet.sample["holder_slot"] == 4


def test_changing_sample_drops_the_previous_sample_keys():
    packet = MetadataPacket()
    packet.set_sample("s1", holder_slot=4)
    packet.set_sample("s2")
    assert "holder_slot" not in packet
    packet["holder_slot"] = 9  # now transient
    packet.reset()
    assert "holder_slot" not in packet


def test_protected_keys_cannot_be_deleted_and_bad_uuids_are_refused():
    packet = MetadataPacket()
    packet.set_sample("s")
    with pytest.raises(KeyError, match="'sample_name' is protected"):
        del packet["sample_name"]
    with pytest.raises(AnalysisInputError, match="must be a string starting with 'SA-'"):
        packet.set_sample("t", sample_uuid="SAM-1234")


def test_packet_merges_into_the_start_document_and_resets_after_the_run(tmp_path):
    packet = MetadataPacket(profile="iss")
    sample = packet.set_sample("Cu foil")
    packet["operator_note"] = "first try"
    run = compose([{"primary": {"x": 1.0}}], {"scan": "edge"}, root=tmp_path, packet=packet)
    start = run.documents[0][1]
    assert start["sample_uuid"] == sample["sample_uuid"]
    assert start["operator_note"] == "first try"
    assert start["profile"] == "iss"
    assert start["scan"] == "edge"
    assert "operator_note" not in packet
    second = compose([{"primary": {"x": 2.0}}], {}, root=tmp_path, packet=packet)
    assert "operator_note" not in second.documents[0][1]
    assert second.documents[0][1]["sample_uuid"] == sample["sample_uuid"]


def test_md_and_packet_may_not_both_set_a_key(tmp_path):
    packet = MetadataPacket()
    packet.set_sample("s")
    before = sorted(tmp_path.rglob("*"))
    with pytest.raises(AnalysisInputError, match=r"both set \['sample_name'\]"):
        compose([{"primary": {"x": 1.0}}], {"sample_name": "other"}, root=tmp_path, packet=packet)
    assert sorted(tmp_path.rglob("*")) == before


def test_sample_uuid_is_queryable_in_tiled(tiled_catalog):
    from tiled.queries import Key

    runs = tiled_catalog.new_runs_container()
    writer = analysis_sink(runs)
    packet = MetadataPacket()
    uids = {}
    for name in ("a", "b"):
        sample_uuid = packet.set_sample(name)["sample_uuid"]
        run = compose([{"primary": {"x": 1.0}}], {}, root=tiled_catalog.new_root(), packet=packet)
        for doc_name, doc in run:
            writer(doc_name, doc)
        uids[sample_uuid] = run.uid
    for sample_uuid, uid in uids.items():
        found = runs.search(Key("start.sample_uuid") == sample_uuid)
        assert list(found) == [uid]
