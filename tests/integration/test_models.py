"""A/B across fal's video models: arms on four model families in one sweep against the local
fal server, which serves every profile from the same files (configs/endpoints)."""

from __future__ import annotations

import os
import subprocess
import sys

import pandas as pd
import pytest

from tests.helpers import run_sweep, write_case
from wansweep.plan.endpoints import PACKAGED, profile
from wansweep.plan.planner import plan
from wansweep.plan.spec import load_spec
from wansweep.store import open_store
from wansweep.store.layout import archived_keys

ARMS = [  # the input image is 640x360 (16:9)
    {"name": "wan-flash", "endpoint": "flash", "settings": {"resolution": "720p", "duration": 5}},
    {"name": "kling", "endpoint": "kling-2.5-turbo-pro", "settings": {"duration": 5}},
    {
        "name": "veo-portrait",
        "endpoint": "veo3-fast",
        "settings": {
            "duration": 4,
            "resolution": "720p",
            "aspect_ratio": "9:16",
            "generate_audio": False,
        },
    },
    {
        "name": "seedance-square",
        "endpoint": "seedance-v1-lite",
        "settings": {"duration": 3, "resolution": "480p", "aspect_ratio": "1:1"},
    },
]
SHAPES = {  # (width, height, seconds) each arm's request asks for
    "wan-flash": (1280, 720, 5),
    "kling": (1280, 720, 5),  # no resolution field: the server's 720 short side, the image's aspect
    "veo-portrait": (720, 1280, 4),
    "seedance-square": (480, 480, 3),
}


def test_a_sweep_across_four_model_families_archives_each_job_once_as_each_profile_says(
    fal, prefect_harness, tmp_path
):
    spec = write_case(
        tmp_path,
        rows=1,
        endpoints=[],
        grid={},
        defaults={},
        arms=ARMS,
        seeds=[1, 2],
        primary_measure="cost_usd",
    )
    result = run_sweep(str(spec))
    assert result["outcomes"] == {"archived": 8}, result
    assert fal.stats()["submits_accepted"] == 8
    notes = plan(load_spec(spec), load_spec(spec).manifest).notes
    assert notes == [
        "arm kling: kling-2.5-turbo-pro takes no seed, so seeds 1, 2 are replicates "
        "(2 paid jobs per row, each a different video)"
    ]
    store = open_store(str(tmp_path / "archive"))
    planned = {j.job_key: j for j in plan(load_spec(spec), load_spec(spec).manifest).jobs}
    assert archived_keys(store) == set(planned)
    for key, job in planned.items():
        meta = store.get_json(f"jobs/{key}/meta.json")
        width, height, seconds = SHAPES[job.arm]
        assert (meta["video"]["width"], meta["video"]["height"]) == (width, height), job.arm
        assert meta["video"]["duration"] == pytest.approx(seconds, abs=0.1)
        fields = profile(job.endpoint).request_fields(job.prompt, job.settings, job.seed)
        assert {k: meta["input"][k] for k in fields} == fields  # what was sent, in its words
    kling = [planned[k] for k in planned if planned[k].arm == "kling"]
    assert "seed" not in kling[0].request_fields() and kling[0].job_key != kling[1].job_key
    assert meta_of(store, planned, "veo-portrait")["input"]["duration"] == "4s"

    report = pd.read_csv(result["report"]["jobs_csv"])
    for _, row in report.iterrows():  # what fal billed is what each profile says
        assert row["cost_usd"] == pytest.approx(planned[row["job_key"]].estimated_usd)
    assert report.groupby("arm")["cost_usd"].sum().to_dict() == pytest.approx(
        {"wan-flash": 0.5, "kling": 0.7, "veo-portrait": 0.8, "seedance-square": 2 * 3 * 0.0175}
    )
    summary = pd.read_csv(result["report"]["summary_csv"])
    assert set(summary["model"]) == {
        "flash",
        "kling-2.5-turbo-pro",
        "veo3-fast",
        "seedance-v1-lite",
    }
    assert set(summary["price_unit"]) == {"per second"}
    md = open(result["report"]["markdown"]).read()
    assert "Arms on 4 models" in md and "seeds are replicates" in md
    ab = pd.read_csv(os.path.join(os.path.dirname(result["report"]["jobs_csv"]), "ab.csv"))
    assert len({(a, b) for a, b in zip(ab["arm_a"], ab["arm_b"])}) == 6  # every pair of 4 arms
    assert set(ab.loc[ab["measure"] == "cost_usd", "role"]) == {"primary"}
    assert "Primary, cost_usd:" in md

    fal.reset()
    again = run_sweep(str(spec))
    assert again["ran"] == 0 and fal.stats()["submits_accepted"] == 0


def meta_of(store, planned, arm: str) -> dict:
    key = next(k for k, j in planned.items() if j.arm == arm)
    return store.get_json(f"jobs/{key}/meta.json")


def test_a_setting_an_endpoint_cannot_honour_is_refused_at_plan_with_nothing_sent(fal, tmp_path):
    spec = write_case(
        tmp_path,
        rows=1,
        endpoints=[],
        grid={},
        defaults={},
        arms=[
            {
                "name": "kling-720",
                "endpoint": "kling-2.5-turbo-pro",
                "settings": {"resolution": "720p"},
            }
        ],
    )
    done = subprocess.run(
        [sys.executable, "-m", "wansweep.cli", "run", str(spec)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PREFECT_SERVER_ALLOW_EPHEMERAL_MODE": "true"},
        timeout=300,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 2 and "Traceback" not in out, out
    assert "arm kling-720 (fal-ai/kling-video/v2.5-turbo/pro/image-to-video)" in out
    assert "resolution: kling-2.5-turbo-pro has no such setting; it takes duration (5, 10 s)" in out
    assert fal.stats()["submits_accepted"] == fal.stats()["submits_rejected"] == 0


def test_a_profile_from_a_folder_outside_the_package_runs_end_to_end(tmp_path):
    from wansweep.localfal.runner import start_local_fal

    mine = tmp_path / "profiles"
    mine.mkdir()
    (mine / "studio.yaml").write_text(
        (PACKAGED / "kling-2.1-standard.yaml")
        .read_text()
        .replace("fal-ai/kling-video/v2.1/standard/image-to-video", "my-studio/i2v/v1")
        .replace("alias: kling-2.1-standard", "alias: studio")
        .replace("family: kling", "family: studio")
    )
    spec = write_case(
        tmp_path, rows=1, endpoints=["studio"], grid={}, defaults={"duration": 10}, seeds=[1]
    )
    env = {
        **os.environ,
        "WANSWEEP_ENDPOINTS": str(mine),
        "PREFECT_SERVER_ALLOW_EPHEMERAL_MODE": "true",
    }
    os.environ["WANSWEEP_ENDPOINTS"] = str(mine)  # the server, started from here, reads it too
    try:
        with start_local_fal(workdir=tmp_path / "fal") as server:
            env.update(server.env)
            for command in (["run", str(spec)], ["endpoints", "--check"]):
                done = subprocess.run(
                    [sys.executable, "-m", "wansweep.cli", *command],
                    capture_output=True,
                    text=True,
                    cwd=tmp_path,
                    env=env,
                    timeout=300,
                )
                assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
            assert "studio (my-studio/i2v/v1): agrees with fal" in done.stdout
            assert server.stats()["submits_accepted"] == 1
    finally:
        del os.environ["WANSWEEP_ENDPOINTS"]
    store = open_store(str(tmp_path / "archive"))
    (key,) = archived_keys(store)
    meta = store.get_json(f"jobs/{key}/meta.json")
    assert meta["endpoint"] == meta["served_by"] == "my-studio/i2v/v1"
    assert meta["video"]["duration"] == pytest.approx(10, abs=0.1)
    report = pd.read_csv(tmp_path / "archive" / "sweeps" / "t" / "report" / "jobs.csv")
    assert report["cost_usd"].tolist() == pytest.approx([0.28 + 5 * 0.056])


def test_endpoints_check_names_what_fal_changed(fal, tmp_path):
    mine = tmp_path / "profiles"
    mine.mkdir()
    text = (PACKAGED / "veo3-fast.yaml").read_text()
    (mine / "veo3-fast.yaml").write_text(
        text.replace('enum: ["4s", "6s", "8s"]', 'enum: ["4s", "8s"]')
    )
    checked = subprocess.run(
        [sys.executable, "-m", "wansweep.cli", "endpoints", "--check"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "WANSWEEP_ENDPOINTS": str(mine), "COLUMNS": "200"},
    )
    assert checked.returncode == 1, checked.stdout + checked.stderr
    lines = checked.stdout.splitlines()
    assert "veo3-fast (fal-ai/veo3/fast/image-to-video): differs" in lines
    assert "  - duration: enum is '4s', '6s', '8s' at fal, '4s', '8s' in the profile" in lines
    assert sum("differs" in line for line in lines) == 1
