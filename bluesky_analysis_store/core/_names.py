"""Names the whole package shares (one definition each)."""

#: The tiled spec of a Bluesky run (bluesky-tiled-plugins' ``BlueskyRun`` client).
RUN_SPEC = "BlueskyRun"

#: ``bas fsck``'s default grace period (seconds): younger runs and files may still be being
#: written. Here, not in ``store._fsck``, so that ``bas``'s parser reads it without numpy.
FSCK_GRACE = 600.0
