"""``import bluesky_analysis_store`` stays light (IPython profiles import it at every start)."""

import json
import subprocess
import sys

HEAVY = ["tiled.server", "dask", "ophyd", "bluesky_tiled_plugins.writing", "h5py", "pandas"]


def test_import_pulls_in_no_heavy_module():
    code = (
        "import json, sys, bluesky_analysis_store as bas;"
        "print(json.dumps(sorted(m for m in sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(json.loads(out.stdout))
    assert "bluesky_analysis_store" in loaded
    assert [m for m in HEAVY if m in loaded] == []


def test_public_names_resolve_lazily():
    import bluesky_analysis_store as bas

    for name in bas.__all__:
        assert getattr(bas, name) is not None, name
