"""The core never imports Prefect: every wansweep module imports with Prefect unimportable.

Checked in a fresh interpreter: taking Prefect out of this test process's modules would pull
it from under the Prefect threads earlier tests left running (their log workers then fail)."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import wansweep

_CHECK = """
import importlib, sys

class NoPrefect:
    def find_spec(self, name, path=None, target=None):
        if name == "prefect" or name.startswith("prefect."):
            raise ImportError(f"the core imported {name}")
        return None

sys.meta_path.insert(0, NoPrefect())
for name in sys.argv[1:]:
    importlib.import_module(name)
assert not [m for m in sys.modules if m.split(".")[0] == "prefect"]
print("imported", len(sys.argv) - 1)
"""


def test_every_core_module_imports_without_prefect():
    modules = sorted(
        m.name
        for m in pkgutil.walk_packages(wansweep.__path__, prefix="wansweep.")
        if not m.name.endswith(".__main__")  # `python -m` entry points run when imported
    )
    assert "wansweep.run.execute" in modules and "wansweep.cli" in modules
    done = subprocess.run(
        [sys.executable, "-c", _CHECK, *modules], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == f"imported {len(modules)}"


_NO_FAL_CLIENT = """
import importlib, sys
for name in sys.argv[1:]:
    importlib.import_module(name)
loaded = sorted(m for m in sys.modules if m.split(".")[0] == "fal_client")
assert not loaded, loaded
"""


def test_planning_never_imports_fal_client():
    """fal-client reads FAL_RUN_HOST / FAL_QUEUE_RUN_HOST once, when first imported: a plan made
    before a run sets them (the local server's, a test's) must not have fixed them already."""
    planning = sorted(
        m.name
        for m in pkgutil.walk_packages(wansweep.__path__, prefix="wansweep.")
        if m.name.startswith(("wansweep.plan", "wansweep.media", "wansweep.store"))
    ) + ["wansweep.fal", "wansweep.fal.types", "wansweep.fal.policy"]
    done = subprocess.run(
        [sys.executable, "-c", _NO_FAL_CLIENT, *planning],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
