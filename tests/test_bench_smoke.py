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
