"""Names the whole package shares (one definition each)."""

#: The tiled spec of a Bluesky run (bluesky-tiled-plugins' ``BlueskyRun`` client).
RUN_SPEC = "BlueskyRun"
