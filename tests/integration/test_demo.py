"""`make demo` as a new user meets it, from a copy of configs/ and nothing else: the Makefile's
own command, twice. Each run ends 0, prints no traceback and fits on one screen; the rerun
finds everything archived and pays for nothing."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCREEN = 50  # lines: a terminal's screenful
FAL_SETTINGS = ("FAL_KEY", "FAL_RUN_HOST", "FAL_QUEUE_RUN_HOST", "WANSWEEP_FAL_API_URL")


def demo_command() -> list[str]:
    """The Makefile's demo recipe, run with this interpreter."""
    recipe = re.search(r"^demo:.*\n\t(.+)$", (ROOT / "Makefile").read_text(), re.M).group(1)
    args = recipe.split()
    assert args[0] == "$(BIN)/wansweep", recipe
    return [sys.executable, "-m", "wansweep.cli", *args[1:]]


def test_make_demo_fits_a_screen_without_a_traceback_and_its_rerun_pays_nothing(tmp_path):
    shutil.copytree(ROOT / "configs", tmp_path / "configs")
    env = {k: v for k, v in os.environ.items() if k not in FAL_SETTINGS and k != "PREFECT_API_URL"}
    outputs = []
    for _ in range(2):
        done = subprocess.run(
            demo_command(), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
        )
        out = done.stdout + done.stderr
        assert done.returncode == 0, out[-3000:]
        assert "Traceback" not in out and "Error" not in out, out[-3000:]
        assert len(out.splitlines()) <= SCREEN, out
        outputs.append(out)
    assert "24 jobs planned, 0 already archived" in outputs[0]
    assert "24 jobs planned, 24 already archived, 0 run" in outputs[1]
    assert "local fal server: 0 submits accepted" in outputs[1]
    assert (tmp_path / "demo-out" / "report.html").exists()
