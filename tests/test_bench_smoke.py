"""The benchmark harness at tiny sizes, so it cannot rot (timings are not asserted)."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_smoke(tmp_path):
    out = tmp_path / "results.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--smoke", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    rows = {r["benchmark"].split(",")[0]: r for r in json.loads(out.read_text())}
    assert "1. overhead: wansweep run" in rows and rows["1. overhead: wansweep run"]["ratio"] > 0
    warm = [r for r in json.loads(out.read_text()) if r["benchmark"].startswith("2. warm rerun")]
    assert warm and all("requests to fal: 0" in r["note"] for r in warm)
    assert any("image reads: 0;" in r["note"] for r in warm)
    plan = [r for r in json.loads(out.read_text()) if r["benchmark"].startswith("7. peak RSS")]
    assert plan and "inputs downloaded and checked: 30" in plan[0]["note"]
    cold = [r for r in json.loads(out.read_text()) if r["benchmark"].startswith("4. cold")]
    assert cold and cold[0]["ratio"] > 0


def test_inputs_bench_smoke():
    """bench/inputs.py at 2 images: the grid is refused, the big PNGs plan (memory is the
    bench's to measure, not this test's)."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "inputs.py"), "--images", "2"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads(proc.stdout)
    assert results["grid_1e9_refused"]["refused"] is True
    assert "1,000,000,000 jobs" in results["grid_1e9_refused"]["message"]
    assert results["pngs"]["plan"] == {**results["pngs"]["plan"], "jobs": 2, "errors": 0}
