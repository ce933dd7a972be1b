"""``bas serve``: the store's tiled app behind its keys (``bas serve`` is its entry)."""
