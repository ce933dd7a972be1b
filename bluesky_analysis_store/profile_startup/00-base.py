# ruff: noqa: F401  (an IPython startup file: names flow between files)
# mypy: ignore-errors
"""00-base: the RunEngine, its metadata, bluesky's plans, and simulated (ophyd.sim) devices.

Replace the ophyd.sim devices with the beamline's own; the later files need only ``RE``.

Environment: ``BAS_BEAMLINE`` (``RE.md["beamline_id"]``, default ``bas-sim``).
"""

import os

import bluesky.plan_stubs as bps
import bluesky.plans as bp
from bluesky import RunEngine
from ophyd.sim import det, det1, det2, motor, motor1, motor2, noisy_det

try:
    _profile_name = get_ipython().profile  # the IPython profile these files run in
except NameError:  # executed outside IPython
    _profile_name = "bas"

RE = RunEngine({})
RE.md["beamline_id"] = os.environ.get("BAS_BEAMLINE") or "bas-sim"
RE.md["profile"] = _profile_name
