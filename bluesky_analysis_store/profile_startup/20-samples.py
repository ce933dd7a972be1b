# ruff: noqa: F821  (an IPython startup file: names flow between files)
# mypy: ignore-errors
"""20-samples: the sample metadata packet, and ``set_sample`` to put the sample into every run.

::

    set_sample("Cu foil", sample_composition="Cu")

assigns an ``SA-`` sample uuid (unless ``sample_uuid=`` is given) and puts the sample keys into
``RE.md``, so every following scan records them; the previous sample's keys go. Analysis plans
given ``packet=packet`` (as ``scan_and_analyze`` in 90-plans.py is) record them too.
"""

from typing import Any

from bluesky_analysis_store import MetadataPacket

packet = MetadataPacket(profile=RE.md["profile"], beamline_id=RE.md["beamline_id"])


def set_sample(name: str, **sample_md: Any) -> dict[str, Any]:
    """Make ``name`` the current sample of the following scans and analyses.

    Parameters
    ----------
    name : str
        The sample's name.
    **sample_md
        Further sample keys, e.g. ``sample_composition="Cu"``; ``sample_uuid`` to reuse a sample
        another session defined.

    Returns
    -------
    dict
        The sample's metadata, with its ``sample_uuid``.
    """
    previous = list(packet.sample)
    sample = packet.set_sample(name, **sample_md)  # raises on bad input: RE.md stays as it was
    for key in previous:
        RE.md.pop(key, None)
    RE.md.update(sample)
    return sample
