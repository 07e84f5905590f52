"""Reports built from archives of real sweeps, checked against figures computed independently."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tests.helpers import run_sweep, write_case
from wansweep.results.report import summary, write_report
from wansweep.store import open_store


@pytest.fixture(scope="module")
def archive(local_fal, prefect_harness, tmp_path_factory):
    """A sweep with some refused jobs: 3 rows x 2 endpoints x 720p x 2 seeds = 12 jobs."""
    local_fal.configure(
        latency="standard=0.1,flash=0.05", media="full", faults="flagged=0.25", fault_seed=11
    )
    local_fal.reset()
    tmp = tmp_path_factory.mktemp("report")
    spec = write_case(tmp, rows=3, grid={"resolution": ["720p"]})
    result = run_sweep(str(spec))
    local_fal.configure(latency="zero", faults="")
    return tmp, result, local_fal.stats()["faults"].get("flagged", 0)


def sidecars(folder: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(folder.glob("jobs/*/meta.json"))]


def test_figures_match_an_independent_computation(archive):
    tmp, result, flagged = archive
    store = open_store(str(tmp / "archive"))
    frame, summ, _ = write_report(store, "t")
    metas = sidecars(tmp / "archive")
    assert 0 < flagged < 12 and len(metas) == 12 - flagged

    assert len(frame) == 12
    assert (frame["status"] == "succeeded").sum() == len(metas)
    assert (frame["status"] == "failed").sum() == flagged
    assert frame["cost_usd"].sum() == pytest.approx(sum(m["estimated_usd"] for m in metas))
    by_arm: dict[str, list[float]] = {}
    for m in metas:
        by_arm.setdefault(m["arm"], []).append(m["timings"]["wall_seconds"])
    for arm, walls in by_arm.items():
        row = summ[summ["arm"] == arm].iloc[0]
        assert row["succeeded"] == len(walls)
        assert row["wall_p50"] == pytest.approx(np.percentile(walls, 50))
        assert row["wall_p90"] == pytest.approx(np.percentile(walls, 90))
        assert row["wall_max"] == pytest.approx(max(walls))
        assert row["video_seconds"] == pytest.approx(5.0 * len(walls), abs=0.5)
    assert summ["jobs"].sum() == 12
    assert (summ["duration_as_asked"] == 1.0).all() and (summ["resolution_as_asked"] == 1.0).all()
    assert (summ["prompt_expanded"] == 1.0).all()  # expansion is on: fal returned actual_prompt
    queue = {}
    for m in metas:
        queue.setdefault(m["arm"], []).append(m["timings"]["queue_seconds"])
    for arm, values in queue.items():
        assert summ.loc[summ["arm"] == arm, "queue_p90"].iloc[0] == pytest.approx(
            np.percentile(values, 90)
        )


def test_summary_by_any_column(archive):
    tmp, _, _ = archive
    frame, _, _ = write_report(open_store(str(tmp / "archive")), "t")
    by_group = summary(frame, ["extra.group"])
    assert set(by_group["extra.group"]) == {"g0", "g1"} and by_group["jobs"].sum() == 12


def test_report_cli_on_an_archive_without_prefect(archive, tmp_path):
    tmp, _, _ = archive
    env = {**os.environ, "PREFECT_API_URL": "http://127.0.0.1:9/api"}  # no Prefect server there
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "wansweep.cli",
            "report",
            str(tmp / "archive"),
            "--by",
            "resolution",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    for name in (
        "jobs.csv",
        "jobs.parquet",
        "summary.csv",
        "summary.md",
        "report.html",
        "seeds.csv",
    ):
        assert (tmp_path / "t" / name).stat().st_size > 0
    assert pd.read_csv(tmp_path / "t" / "summary.csv")["resolution"].tolist() == ["720p"]


def test_html_report_renders_in_chromium(archive, chromium, tmp_path):
    tmp, result, _ = archive
    page = Path(result["report"]["html"])
    text = page.read_text()
    assert not re.search(r"""(src|href)=['"]https?://""", text)  # self-contained
    assert text.count("data:image/png;base64") == 3  # three plots
    assert text.count("data:image/jpeg;base64") == 12 - archive[2]  # one strip per archived job
    shot = tmp_path / "report.png"
    subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--window-size=1400,2000",
            f"--screenshot={shot}",
            page.as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    img = np.asarray(Image.open(shot).convert("RGB"))
    assert img.shape[:2] == (2000, 1400)
    # Rendered plots and frames put many colours on the page; a page of text alone has few.
    colours = len(np.unique(img.reshape(-1, 3)[::7], axis=0))
    assert colours > 2000
    green_bars = ((img[..., 1] > 150) & (img[..., 0] < 140) & (img[..., 2] < 120)).sum()
    assert green_bars > 2000  # the cost-per-arm bars were drawn


def test_the_report_pairs_the_arms_and_says_which_is_better(archive):
    """standard vs flash on the same 3 images x 2 seeds: pairs are jobs both arms archived."""
    tmp, _, _ = archive
    store = open_store(str(tmp / "archive"))
    frame, _, _ = write_report(store, "t")
    done = frame[frame["status"] == "succeeded"]
    both = done.groupby(["image_sha256", "prompt", "seed_requested"])["arm"].nunique()
    pairs = int((both == 2).sum())
    ab = pd.read_csv(io.BytesIO(store.get_bytes("sweeps/t/report/ab.csv")))
    cost = ab[ab["measure"] == "cost_usd"].iloc[0]
    assert cost["pairs"] == pairs > 0
    # flash costs less per second than standard at 720p: the paired verdict says so
    assert cost["verdict"] == "flash-720p"
    assert {"q_motion", "q_flicker", "q_frozen_fraction"} <= set(ab["measure"])
    # every archived video carries its measured quality, in the sidecar and the report
    for m in sidecars(tmp / "archive"):
        assert m["quality"]["cuts"] == 0 and m["quality"]["duration_error_s"] == pytest.approx(
            0, abs=0.1
        )
    assert done["q_motion"].notna().all() and done["q_compliant"].all()
    md = store.get_bytes("sweeps/t/report/summary.md").decode()
    assert "Which arm is better" in md and "cost_usd: flash-720p" in md
    page = store.get_bytes("sweeps/t/report/report.html").decode()
    assert page.count("<video class='paired'") == 2 * min(8, pairs)  # side-by-side players
    stability = page.split("Stability across seeds")[1].split("<h2>")[0]
    assert "wall_seconds" in stability and "q_motion" in stability  # 2 seeds per input
