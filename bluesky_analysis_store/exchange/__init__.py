"""Provenance that travels: W3C PROV, RO-Crate and SciCat exports of a run's provenance, and
the import of a PROV export into another store's lineage."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..core._lazy import lazy_exports

_EXPORTS = {
    "ImportReport": "._import",
    "import_prov": "._import",
    "export_prov": "._prov",
    "ProvenanceRecord": "._record",
    "gather": "._record",
    "export_ro_crate": "._rocrate",
    "ScicatExport": "._scicat",
    "export_scicat": "._scicat",
}

if not TYPE_CHECKING:  # mypy reads the names from the imports below (a star import too)
    __all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:
    from ._import import ImportReport, import_prov
    from ._prov import export_prov
    from ._record import ProvenanceRecord, gather
    from ._rocrate import export_ro_crate
    from ._scicat import ScicatExport, export_scicat
