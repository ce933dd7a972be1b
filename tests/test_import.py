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


def test_the_version_is_the_installed_distributions():
    import importlib.metadata

    import bluesky_analysis_store

    assert bluesky_analysis_store.__version__ == importlib.metadata.version(
        "bluesky-analysis-store"
    )


def test_the_package_reexports_every_subpackage():
    import pkgutil

    import bluesky_analysis_store as bas

    found = {m.name for m in pkgutil.iter_modules(bas.__path__) if m.ispkg}
    assert found - {"profile_startup", "schemas"} == set(bas._SUBPACKAGES)


def test_each_subpackage_reexports_its_names_the_same_as_the_package():
    import importlib

    import bluesky_analysis_store as bas

    for name in bas._SUBPACKAGES:
        package = importlib.import_module(f"bluesky_analysis_store.{name}")
        for export in getattr(package, "__all__", ()):
            value = getattr(package, export)
            if export in bas.__all__:
                assert getattr(bas, export) is value, (name, export)


def test_the_old_name_of_analysis_sink_still_works_and_warns():
    import pytest

    import bluesky_analysis_store as bas

    with pytest.warns(DeprecationWarning, match="analysis_sink"):
        sink = bas.analysis_tiled_writer(_AnyContainer())
    assert type(sink) is type(bas.analysis_sink(_AnyContainer()))


class _AnyContainer:
    """Enough of a tiled container for a sink that is never called."""

    def include_data_sources(self):
        return self
