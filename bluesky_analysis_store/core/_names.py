"""Names the whole package shares (one definition each)."""

#: The tiled spec of a Bluesky run (bluesky-tiled-plugins' ``BlueskyRun`` client).
RUN_SPEC = "BlueskyRun"

#: ``bas fsck``'s default grace period (seconds): younger runs and files may still be being
#: written. Here, not in ``store._fsck``, so that ``bas``'s parser reads it without numpy.
FSCK_GRACE = 600.0

#: The start key listing the runs a new run supersedes (``bas reprocess`` writes it when it
#: recomputes a stale run; the old run stays).
SUPERSEDES_KEY = "supersedes"
#: The start key where ``bas reprocess`` records the campaign and procedure of a run.
REPROCESS_KEY = "reprocess"

#: The start key of a lineage record ``bas import-prov`` made: a run known here by its
#: provenance only (no data; its stop says ``exit_status="abort"``), and where it came from.
IMPORTED_KEY = "bas_imported"
#: ``bas export --format scicat``'s default ``--pid-template``: SciCat knows a raw run by its uid.
DEFAULT_PID_TEMPLATE = "{uid}"

#: Our namespace for provenance identifiers (prefix ``bas``): ``run/<uid>``, ``execution/<uid>``,
#: ``file/<sha256>``... in the PROV and RO-Crate exports and in tiled's graph of links.
BAS_NAMESPACE = "urn:bluesky-analysis-store:"
#: The W3C PROV namespace (prefix ``prov``): the predicates of lineage links and exports.
PROV_NAMESPACE = "http://www.w3.org/ns/prov#"
