"""Small shared helpers for the tests (importable: pytest puts tests/ on sys.path)."""

from __future__ import annotations

import socket
from typing import Any

from bluesky_analysis_store import ComposedRun, Provenance, capture_provenance, compose_analysis_run

PARENT_UID = "0f3c5a8e-9b1d-4c2e-8a7f-1d2e3f4a5b6c"


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def reduce_spectrum(data: Any) -> Any:
    """Stand-in analysis function whose provenance the tests capture."""
    return data


reduce_spectrum.version = "1.0"  # type: ignore[attr-defined]
reduce_spectrum.url = "https://example.org/reduce-spectrum"  # type: ignore[attr-defined]


def make_provenance(**kwargs: Any) -> Provenance:
    """Provenance of ``reduce_spectrum`` with one raw parent (satisfies the default policy)."""
    kwargs.setdefault("parents", [PARENT_UID])
    return capture_provenance(reduce_spectrum, **kwargs)


def compose(*args: Any, **kwargs: Any) -> ComposedRun:
    """``compose_analysis_run`` with valid provenance unless the test gives its own."""
    if "provenance" not in kwargs:
        kwargs["provenance"] = make_provenance()
    return compose_analysis_run(*args, **kwargs)


#: Reliability figures reported by this session: (test node id, area, claim, values); the
#: terminal summary prints them and ``--reliability-report`` writes RELIABILITY.md from them.
FIGURES: list[tuple[str, str, str, dict[str, Any]]] = []


def figure(capsys: Any, area: str, claim: str, **values: Any) -> None:
    """Report what a reliability test measured, once its assertions have passed.

    ``area`` is one of :data:`reliability.AREAS`; ``claim`` says in a sentence what the figures
    show. The line is printed at once (it shows under ``-q`` too).
    """
    import os

    test = os.environ.get("PYTEST_CURRENT_TEST", "?").rsplit(" (", 1)[0]
    FIGURES.append((test, area, claim, dict(values)))
    with capsys.disabled():
        print(f"\nRELIABILITY {area}: " + " ".join(f"{k}={v}" for k, v in values.items()))


def insert_all(store: Any, docs: list[tuple[str, Any]]) -> list[tuple[str, str]]:
    """Insert every document in turn; the (name, message) of each refused one."""
    from bluesky_analysis_store import InvalidDocumentError

    refused = []
    for name, doc in docs:
        try:
            store.insert(name, doc)
        except InvalidDocumentError as error:
            refused.append((name, str(error)))
    return refused


def raw_run(runs: Any, **metadata: Any) -> str:
    """A raw run (no provenance keys) of plan ``count``, as a RunEngine writes it, inserted into
    ``runs`` with bluesky-tiled-plugins' TiledWriter; its uid."""
    from bluesky_tiled_plugins.writing.tiled_writer import TiledWriter
    from event_model import compose_run

    bundle = compose_run(metadata={"plan_name": "count", **metadata})
    descriptor = bundle.compose_descriptor(
        name="primary", data_keys={"det": {"source": "sim", "dtype": "number", "shape": []}}
    )
    writer = TiledWriter(runs)
    writer("start", bundle.start_doc)
    writer("descriptor", descriptor.descriptor_doc)
    writer("event", descriptor.compose_event(data={"det": 1.0}, timestamps={"det": 0.0}))
    writer("stop", bundle.compose_stop())
    return str(bundle.start_doc["uid"])
