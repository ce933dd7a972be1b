"""``analyze``: a bluesky plan that runs an analysis and emits its result as a derived run."""

from __future__ import annotations

import numbers
from collections.abc import Generator, Mapping, Sequence
from pathlib import Path
from typing import Any

import event_model
from bluesky import plan_stubs as bps
from bluesky import preprocessors as bpp

from ..compose._compose import run_content_hash
from ..compose._keys import AssetForm, check_root, lay_out_data_dicts, provenance_attributes
from ..core._errors import AnalysisInputError
from ..core._values import short_repr
from ..pairs._pairs import PairRegistry, default_registry
from ..provenance._capture import capture_provenance
from ..provenance._policy import ProvenancePolicy, enforce_provenance
from ..provenance._samples import MetadataPacket
from ..provenance._start_metadata import start_metadata
from ._device import AnalysisDevice


class _Feed:
    """``compute()`` of one stream's device: the entry the plan is at (the first before any)."""

    def __init__(self, first: Mapping[str, Any]) -> None:
        self.current = first

    def __call__(self) -> Mapping[str, Any]:
        return self.current


def _is_run(value: Any) -> bool:
    metadata = getattr(value, "metadata", None)
    return isinstance(metadata, Mapping) and isinstance(metadata.get("start"), Mapping)


def resolve_parents(parents: Any, catalog: Any) -> list[Any]:
    """The parent runs: runs as given, uids (full or partial) and scan ids looked up.

    Raises
    ------
    AnalysisInputError
        Naming a parent that is neither a run nor a uid found in ``catalog``.
    """
    if isinstance(parents, str | numbers.Integral) or _is_run(parents):
        parents = [parents]  # one parent given alone
    if not isinstance(parents, Sequence):
        raise AnalysisInputError(
            f"parents must be a list of runs or run uids; got {type(parents).__name__}"
        )
    runs = []
    for parent in parents:
        if _is_run(parent):
            runs.append(parent)
            continue
        if not isinstance(parent, str | numbers.Integral) or isinstance(parent, bool):
            raise AnalysisInputError(
                f"parent {parent!r:.80} is not accepted; give a run (an object with "
                ".metadata['start']), or a uid (full or partial) or scan id of a run in catalog"
            )
        if catalog is None:
            raise AnalysisInputError(
                f"parent {parent!r} is a uid but catalog=None; pass catalog=... (the "
                "CatalogOfBlueskyRuns client holding it) or the run itself"
            )
        try:
            run = catalog[parent]
        except (KeyError, ValueError, IndexError) as error:
            raise AnalysisInputError(
                f"parent {parent!r} is not found in the catalog {catalog!r:.80} ({error}); give "
                "the uid (full or unambiguous partial) of a run in it, or the run itself"
            ) from None
        runs.append(run)
    return runs


def _unpack(result: Any, analysis: Any) -> tuple[Any, Mapping[str, Any]]:
    if not isinstance(result, tuple | list) or len(result) != 2:
        raise AnalysisInputError(
            f"analysis {short_repr(analysis)} returned {type(result).__name__}; it must return "
            "(data_dicts, md): a list of {stream: {data_key: value}} and a mapping (or None)"
        )
    data_dicts, md = result
    if md is None:
        md = {}
    if not isinstance(md, Mapping):
        raise AnalysisInputError(
            f"analysis {short_repr(analysis)} returned md {short_repr(md)}; it must be a mapping "
            "for the start document (or None)"
        )
    return data_dicts, md


def analyze(
    analysis: Any,
    parents: Any,
    *,
    catalog: Any,
    root: str | Path,
    parameters: Mapping[str, Any] | None = None,
    md: Mapping[str, Any] | None = None,
    policy: ProvenancePolicy | None = None,
    writers: Mapping[str, Any] | None = None,
    registry: PairRegistry | None = None,
    packet: MetadataPacket | None = None,
    asset_form: AssetForm = "stream_resource",
) -> Generator[Any, Any, str]:
    """Run ``analysis`` on parent runs and emit its result as a derived run (a bluesky plan).

    The plan calls ``analysis(*parent_runs, **parameters)``, which returns DBEP 6
    ``(data_dicts, md)``, captures and enforces the provenance, and checks every value and the
    metadata under the rules of :func:`~bluesky_analysis_store.compose_analysis_run` — all
    before it opens the run, so bad input raises with no document emitted and no file written.
    Then it opens the run, stages one :class:`~bluesky_analysis_store.AnalysisDevice` per
    stream, emits one event per entry of ``data_dicts`` (``trigger_and_read``), unstages (the
    files get their final names before the stop document) and closes the run. Documents go to
    whatever the RunEngine feeds (``RE.subscribe(store.insert)``); preprocessors apply.

    Parameters
    ----------
    analysis : callable
        ``analysis(*parent_runs, **parameters) -> (data_dicts, md)``; its name and version
        are found as by :func:`~bluesky_analysis_store.capture_code`.
    parents : list
        Runs (objects with ``.metadata['start']``), or uids (full or partial) or scan ids of
        runs in ``catalog``; a single one may be given alone.
    catalog : CatalogOfBlueskyRuns client or None
        Where uids are looked up (e.g. ``store.raw`` or ``store.runs``).
    root : str or Path
        Existing directory for the files (``store.root`` to read them back through the store),
        as ``ROOT/RUN_UID/STREAM/KEY.SUFFIX``.
    parameters : mapping, optional
        Keyword arguments of ``analysis``, recorded in the provenance (JSON values).
    md : mapping, optional
        Start-document metadata, merged with the ``md`` the analysis returns (a key set by
        both is an error); ``plan_name`` defaults to ``"analyze"``.
    policy : ProvenancePolicy, optional
        What the provenance must satisfy (default: the default policy).
    writers, registry, asset_form
        As for ``compose_analysis_run``; a DBEP 6 ``resource`` function is not accepted.
    packet : MetadataPacket, optional
        Sample metadata for the start document; its transient keys are cleared after the run.

    Returns
    -------
    str
        The run's uid, as the plan's return value (``RE(plan)`` itself returns the run uids).

    Raises
    ------
    AnalysisInputError
        Bad ``data_dicts``, ``md``, ``writers`` or ``root``, or a parent not found.
    ProvenanceError
        Provenance the policy does not accept (e.g. an analysis without a version).
    UnknownSpecError
        A spec name no pair is registered under.
    """
    registry = registry if registry is not None else default_registry()
    policy = policy if policy is not None else ProvenancePolicy()
    if parameters is not None and not isinstance(parameters, Mapping):
        raise AnalysisInputError(
            f"parameters must be a mapping of keyword arguments; got {short_repr(parameters)}"
        )
    parameters = dict(parameters or {})
    parent_runs = resolve_parents(parents, catalog)
    # Provenance first: a policy refusal costs nothing, the analysis may cost minutes.
    provenance = enforce_provenance(
        capture_provenance(analysis, parents=parent_runs, parameters=parameters), policy
    )
    data_dicts, analysis_md = _unpack(analysis(*parent_runs, **parameters), analysis)
    caller_md = {} if md is None else md
    if not isinstance(caller_md, Mapping):
        raise AnalysisInputError(
            f"md must be a mapping for the start document; got {short_repr(md)}"
        )
    overlap = sorted(set(caller_md) & set(analysis_md))
    if overlap:
        raise AnalysisInputError(
            f"md and the md returned by the analysis both set {overlap}; set each key in one place"
        )
    metadata = start_metadata({**caller_md, **analysis_md}, provenance, policy, packet)
    metadata.setdefault("plan_name", "analyze")
    try:
        event_model.compose_run(metadata=metadata)  # the start document the RunEngine will make
    except Exception as error:
        raise AnalysisInputError(f"md does not make a valid start document: {error}") from None

    streams, layouts = lay_out_data_dicts(data_dicts, writers, registry)
    metadata["content_hash"] = run_content_hash(metadata, streams, layouts, asset_form)
    root = Path(root)
    check_root(root)
    feeds = {stream: _Feed(entries[0][1]) for stream, entries in streams.items()}
    devices = {
        stream: AnalysisDevice(
            feeds[stream],
            name=stream,
            root=root,
            writers={k: v for k, v in (writers or {}).items() if k in entries[0][1]},
            registry=registry,
            asset_form=asset_form,
        )
        for stream, entries in streams.items()
    }

    uid = yield from bps.open_run(md=metadata)
    for device in devices.values():
        device.run_uid = uid
        device.file_attributes = provenance_attributes(metadata["provenance"])

    def events() -> Generator[Any, Any, None]:
        for entry in data_dicts:
            for stream, data in entry.items():
                feeds[stream].current = data
                yield from bps.trigger_and_read([devices[stream]], name=stream)

    # Unstaging (publishing the files) runs even when an event fails, and before the stop.
    yield from bpp.stage_wrapper(events(), list(devices.values()))
    yield from bps.close_run()
    if packet is not None:
        packet.reset()
    return str(uid)
