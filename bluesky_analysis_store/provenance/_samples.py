"""The sample metadata packet (AFL's DataPacket): protected system and sample keys, transient keys.

Every analysis run's start document gets the packet's contents. After a run is saved the packet
is reset: transient keys go, protected system and sample keys stay.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterable, Iterator, Mapping, MutableMapping
from typing import Any

from ..core._errors import AnalysisInputError, ProtectedKeyError

SAMPLE_UUID_PREFIX = "SA-"

#: Keys that describe the system; they survive every reset (including the version: AFL's didn't).
SYSTEM_KEYS = ("package_version", "host", "profile", "system_serial")
#: Keys that describe the current sample; they survive every reset until the sample changes.
SAMPLE_KEYS = (
    "sample_name",
    "sample_uuid",
    "sample_composition",
    "campaign_name",
    "campaign_uuid",
)


def with_parents_sample(md: Mapping[str, Any], starts: Iterable[Mapping[str, Any]]) -> Any:
    """``md`` with the sample keys (:data:`SAMPLE_KEYS`) that every parent start shares and
    ``md`` does not set: the sample follows its data unless the analysis says otherwise. ``md``
    that is not a mapping is returned as it is (the save refuses it with its own message)."""
    if not isinstance(md, Mapping):
        return md
    starts = list(starts)
    shared = {
        key: starts[0][key]
        for key in SAMPLE_KEYS
        if starts and key in starts[0] and all(s.get(key) == starts[0][key] for s in starts)
    }
    return {**{k: v for k, v in shared.items() if k not in md}, **md}


def new_sample_uuid() -> str:
    """A fresh sample uuid, ``SA-`` followed by a UUID4."""
    return f"{SAMPLE_UUID_PREFIX}{uuid.uuid4()}"


class MetadataPacket(MutableMapping[str, Any]):
    """A dict-like packet merged into every analysis run's start document.

    Parameters
    ----------
    profile : str, optional
        The beamline profile or driver name.
    system_serial : str, optional
        A serial or name identifying the instrument.
    **system_md
        Further protected system keys.

    Examples
    --------
    >>> packet = MetadataPacket(profile="iss")
    >>> sample = packet.set_sample("Cu foil", sample_composition="Cu")
    >>> sample["sample_uuid"].startswith("SA-")
    True
    >>> packet["exposure_note"] = "beam dumped once"   # transient
    >>> packet.reset()
    >>> "exposure_note" in packet, packet["sample_name"]
    (False, 'Cu foil')
    """

    def __init__(
        self, *, profile: str | None = None, system_serial: str | None = None, **system_md: Any
    ) -> None:
        from ..core._version import __version__

        self._data: dict[str, Any] = {}
        self._system_keys: set[str] = set(SYSTEM_KEYS) | set(system_md)
        self._sample_keys: set[str] = set(SAMPLE_KEYS)
        self._data.update(
            {
                "package_version": __version__,
                "host": socket.gethostname(),
                "profile": profile,
                "system_serial": system_serial,
                **system_md,
            }
        )

    @property
    def protected_keys(self) -> frozenset[str]:
        """Keys that survive :meth:`reset`."""
        return frozenset(self._system_keys | self._sample_keys)

    def set_sample(self, name: str | None = None, **sample_md: Any) -> dict[str, Any]:
        """Make ``name`` the current sample; return its metadata to pass on to other servers.

        A ``sample_uuid`` starting with ``SA-`` is assigned unless one is given: pass the
        returned dict to another packet's ``set_sample(**sample)`` to share the uuid (the name
        then comes from its ``sample_name``). Every key given here is protected, and the
        previous sample's keys are dropped.
        """
        sample_md = dict(sample_md)
        given_name = sample_md.pop("sample_name", None)
        if name is None:
            name = given_name
        if not isinstance(name, str) or not name or given_name not in (None, name):
            raise AnalysisInputError(
                f"set_sample needs one sample name (got name={name!r} and "
                f"sample_name={given_name!r}); pass set_sample('Cu foil', ...) or the dict that "
                "another packet's set_sample returned"
            )
        sample_uuid = sample_md.setdefault("sample_uuid", new_sample_uuid())
        if not isinstance(sample_uuid, str) or not sample_uuid.startswith(SAMPLE_UUID_PREFIX):
            raise AnalysisInputError(
                f"sample_uuid {sample_uuid!r} must be a string starting with "
                f"{SAMPLE_UUID_PREFIX!r}; leave it out to have one assigned"
            )
        for key in self._sample_keys - set(SAMPLE_KEYS):
            self._data.pop(key, None)
        for key in SAMPLE_KEYS:
            self._data.pop(key, None)
        # Protect the keys before writing them (AFL wrote first and lost extra keys at reset).
        self._sample_keys = set(SAMPLE_KEYS) | set(sample_md)
        self._data.update({"sample_name": name, **sample_md})
        return {"sample_name": name, **sample_md}

    @property
    def sample(self) -> dict[str, Any]:
        """The current sample's metadata."""
        return {k: self._data[k] for k in sorted(self._sample_keys) if k in self._data}

    def reset(self) -> None:
        """Drop every transient key; protected system and sample keys stay."""
        for key in list(self._data):
            if key not in self.protected_keys:
                del self._data[key]

    def as_metadata(self) -> dict[str, Any]:
        """A copy of the contents, without keys whose value is None."""
        return {k: v for k, v in self._data.items() if v is not None}

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self._data[key] = value

    def __delitem__(self, key: str) -> None:
        if key in self.protected_keys:
            raise ProtectedKeyError(f"{key!r} is protected; use set_sample() to change sample keys")
        del self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"MetadataPacket({self._data!r})"
