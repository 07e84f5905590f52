"""The core never imports Prefect: every wansweep module imports with Prefect unimportable."""

from __future__ import annotations

import importlib
import pkgutil
import sys

import wansweep


class _NoPrefect:
    def find_spec(self, name, path=None, target=None):
        if name == "prefect" or name.startswith("prefect."):
            raise ImportError(f"the core imported {name}")
        return None


def test_every_core_module_imports_without_prefect():
    modules = sorted(m.name for m in pkgutil.walk_packages(wansweep.__path__, prefix="wansweep."))
    assert "wansweep.execute" in modules and "wansweep.cli" in modules
    saved = {
        k: v
        for k, v in sys.modules.items()
        if k.split(".")[0] in ("wansweep", "prefect", "flows", "tasks")
    }
    for name in saved:
        del sys.modules[name]
    blocker = _NoPrefect()
    sys.meta_path.insert(0, blocker)
    try:
        for name in modules:
            importlib.import_module(name)
    finally:
        sys.meta_path.remove(blocker)
        for name in [k for k in sys.modules if k.split(".")[0] in ("wansweep", "prefect")]:
            del sys.modules[name]
        sys.modules.update(saved)
