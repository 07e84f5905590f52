"""The sweep flow end to end: real fal-client -> local fal server, real S3 (moto), real Prefect."""

from __future__ import annotations

import io
import json
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, HTTPServer

import boto3
import pandas as pd
import pytest

from tests.fal_examples import FAL_EXAMPLE_PROMPT
from tests.helpers import make_image, run_sweep, write_case
from wansweep.errors import OverBudget, PlanInvalid
from wansweep.localfal.queue import input_key
from wansweep.plan.planner import plan
from wansweep.plan.spec import load_spec
from wansweep.run.ledger import Ledger
from wansweep.run.steps import request_body
from wansweep.store import open_store
from wansweep.store.layout import archived_keys, report_file, vote_key


def test_sweep_archives_every_job_and_a_rerun_pays_nothing(fal, prefect_harness, tmp_path):
    spec = write_case(tmp_path)
    result = run_sweep(str(spec))
    assert (
        result["planned"] == 24 and result["outcomes"] == {"archived": 24} and result["failed"] == 0
    )
    stats = fal.stats()
    assert stats["submits_accepted"] == 24

    store = open_store(str(tmp_path / "archive"))
    keys = archived_keys(store)
    assert len(keys) == 24
    for key in keys:
        meta = store.get_json(f"jobs/{key}/meta.json")
        assert store.size(f"jobs/{key}/video.mp4") == meta["video"]["size"]
        assert store.exists(f"jobs/{key}/thumb.jpg")
        short = min(meta["video"]["width"], meta["video"]["height"])
        assert short == int(meta["input"]["resolution"][:-1])
        assert meta["video"]["duration"] == pytest.approx(5.0, abs=0.1)
        assert meta["seed"] == meta["seed_requested"]
        assert "data:" not in json.dumps(meta["input"]).replace("data:image/png;base64,...", "")
        assert meta["row"]["group"] in ("g0", "g1")
        t = meta["timings"]
        assert t["submitted_at"] <= t["started_at"] <= t["completed_at"] <= t["archived_at"]

    report = pd.read_csv(result["report"]["jobs_csv"])
    assert len(report) == 24 and set(report["status"]) == {"succeeded"}
    expected_usd = sum(
        j.estimated_usd for j in plan(load_spec(spec), load_spec(spec).manifest).jobs
    )
    assert report["cost_usd"].sum() == pytest.approx(expected_usd)
    assert sorted(report["arm"].unique()) == [
        "flash-1080p",
        "flash-720p",
        "standard-1080p",
        "standard-720p",
    ]

    fal.reset()
    again = run_sweep(str(spec))
    assert again["already_archived"] == 24 and again["ran"] == 0
    assert fal.stats()["submits_accepted"] == 0 and fal.stats()["status_polls"] == 0
    # nothing changed: the report stands as built; a new vote or a lost file rebuilds it
    assert again["report_rebuilt"] is False and again["report"] == result["report"]
    sweep_name = load_spec(spec).name
    store.put_json(vote_key(sweep_name, "ann", "v1"), {"pair_id": "x"})
    assert run_sweep(str(spec))["report_rebuilt"] is True
    assert run_sweep(str(spec))["report_rebuilt"] is False
    store.delete(report_file(sweep_name, "seeds.csv"))
    assert run_sweep(str(spec))["report_rebuilt"] is True
    assert store.exists(report_file(sweep_name, "seeds.csv"))


def test_sweep_with_manifest_images_and_archive_on_s3(fal, prefect_harness, tmp_path, bucket):
    s3 = boto3.client("s3")
    lines = ["id,image,prompt"]
    for i in range(2):
        s3.put_object(Bucket=bucket, Key=f"in/img{i}.png", Body=make_image(seed=i))
        lines.append(f"r{i},img{i}.png,on s3 {i}")  # relative to the manifest, inside the bucket
    s3.put_object(Bucket=bucket, Key="in/manifest.csv", Body="\n".join(lines).encode())
    spec = write_case(
        tmp_path,
        rows=0,
        manifest=f"s3://{bucket}/in/manifest.csv",
        store=f"s3://{bucket}/archive",
        endpoints=["flash"],
        grid={"resolution": ["720p"]},
        seeds=[3],
    )
    result = run_sweep(str(spec))
    assert result["outcomes"] == {"archived": 2}
    listed = {
        o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="archive/jobs/")["Contents"]
    }
    assert sum(k.endswith("/meta.json") for k in listed) == 2
    assert sum(k.endswith("/video.mp4") for k in listed) == 2
    meta_key = next(k for k in listed if k.endswith("meta.json"))
    meta = json.loads(s3.get_object(Bucket=bucket, Key=meta_key)["Body"].read())
    assert meta["input"]["image"]["uri"].startswith(f"s3://{bucket}/in/img")
    assert "X-Amz-Signature" not in json.dumps(meta)  # no presigned URL kept
    frame = pd.read_parquet(
        io.BytesIO(
            s3.get_object(Bucket=bucket, Key="archive/sweeps/t/report/jobs.parquet")["Body"].read()
        )
    )
    assert len(frame) == 2


def test_invalid_rows_stop_the_run_before_any_submit(fal, prefect_harness, tmp_path):
    spec = write_case(tmp_path, rows=2)
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(
        manifest.read_text() + f"bad,img0.png,{'x' * 10_001},g0\nmissing,nope.png,hello,g1\n"
    )
    with pytest.raises(PlanInvalid) as err:
        run_sweep(str(spec))
    text = str(err.value)
    assert "row 3 (id bad): prompt" in text and "string_too_long" in text
    assert "row 4 (id missing): image" in text and "file_missing" in text
    assert fal.stats()["submits_accepted"] == 0

    result = run_sweep(str(spec), skip_invalid=True)
    assert result["skipped_rows"] == 2 and result["ran"] == 16
    report = pd.read_csv(result["report"]["jobs_csv"])
    skipped = report[report["status"] == "skipped"]
    assert set(skipped["row_id"]) == {"bad", "missing"}
    assert skipped["error"].str.contains("10000 characters").any()


def test_a_sweep_over_its_budget_does_not_start(fal, prefect_harness, tmp_path):
    spec = write_case(tmp_path, rows=1, budget_usd=1.0)  # 8 jobs, $3.75
    with pytest.raises(OverBudget):
        run_sweep(str(spec))
    assert fal.stats()["submits_accepted"] == 0


def test_faults_never_pay_twice(fal, prefect_harness, tmp_path):
    """429s, 5xx, dropped answers after accepted submits and failed generations: every job that
    can complete does, and no input is accepted twice except to retry a failed generation.

    Which requests meet a fault depends on thread timing, so a job may (rarely) fail all its
    attempts; the test then checks that it really did use them all. A submit whose answer was
    lost and that fal's records prove never taken uses an attempt too (``absent``): every
    submit counts, so no run of faults can make a loop."""
    fal.configure(
        media="tiny",
        fault_seed=7,
        faults=(
            "submit_429=0.1,submit_5xx=0.05,drop_after_accept=0.05,failed=0.05,"
            "status_429=0.05,status_5xx=0.05,result_5xx=0.05,download_fail=0.05"
        ),
    )
    spec = write_case(tmp_path, rows=10, seeds={"range": [0, 5]}, max_attempts=3)  # 10x4x5 = 200
    result = run_sweep(str(spec))
    stats = fal.stats()
    cfg = load_spec(spec)
    jobs = plan(cfg, cfg.manifest).jobs
    assert len(jobs) == 200
    ledger = Ledger(open_store(cfg.store)).all()
    per_input = Counter(stats["submits_by_input"])
    gave_up, ambiguous = [], []
    for job in jobs:
        entry = ledger[job.job_key]
        n = per_input[input_key(job.endpoint, request_body(job))]
        # one accepted submit per attempt, and a new attempt only after a failed generation
        # (a 429, 5xx or lost answer never adds one): more would be a job paid twice
        assert n <= 1 + entry.retries("failed"), (job.job_key, n, entry.history)
        if entry.status == "ambiguous":
            # a 5xx answer that fal did not take: only fal's records, complete later, can say
            assert n == entry.attempts - 1 == entry.retries("failed"), entry.history
            ambiguous.append(job.job_key)
        elif entry.status != "archived":
            # else the only way to end unarchived: every attempt was a failed generation
            assert entry.status == "failed" and entry.error_kind == "failed", entry
            assert entry.attempts == cfg.max_attempts, entry.history
            # every attempt fal took was a failed generation; the others it never took
            assert n == entry.attempts - entry.retries("absent") >= 1, (n, entry.history)
            gave_up.append(job.job_key)
    assert stats["faults"].get("drop_after_accept", 0) >= 1
    assert stats["faults"].get("failed", 0) >= 1
    assert any(e.reconciled for e in ledger.values())
    assert len(gave_up) <= 2  # 200 x 0.05**3: more would mean lost retries
    assert result["outcomes"].get("ambiguous", 0) == len(ambiguous) >= 1  # submit_5xx=0.05
    assert result["outcomes"].get("archived") == 200 - len(gave_up) - len(ambiguous)


@pytest.mark.parametrize(
    "rule", list(__import__("tests.unit.test_manifest", fromlist=["RULES"]).RULES)
)
def test_each_invalid_row_stops_the_flow_before_fal_sees_anything(
    fal, prefect_harness, tmp_path, rule, monkeypatch
):
    from tests.unit.test_manifest import RULES

    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # unreachable S3 for that rule
    change, field, code = RULES[rule]
    spec = write_case(
        tmp_path, rows=1, endpoints=["flash"], grid={"resolution": ["720p"]}, seeds=[1]
    )
    row = {"id": "bad", "image": "img0.png", "prompt": "fine", "group": "g", **change}
    frame = pd.read_csv(tmp_path / "manifest.csv", dtype=str)
    pd.concat([frame, pd.DataFrame([row])]).to_csv(tmp_path / "manifest.csv", index=False)
    with pytest.raises(PlanInvalid) as err:
        run_sweep(str(spec))
    assert f"row 2 (id bad): {field}:" in str(err.value) and code in str(err.value)
    stats = fal.stats()
    assert stats["submits_accepted"] == 0 and stats["submits_rejected"] == 0
    assert not (tmp_path / "archive" / "ledger").exists()


def test_notifications_carry_the_summary_and_failures(fal, prefect_harness, tmp_path, monkeypatch):

    received: list[dict] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self):
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *a):
            pass

    server = HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("WANSWEEP_NOTIFY_URL", f"http://127.0.0.1:{server.server_port}/hook")
    try:
        spec = write_case(
            tmp_path, rows=1, endpoints=["flash"], grid={"resolution": ["720p"]}, seeds=[1]
        )
        run_sweep(str(spec))
        assert "## Sweep `t`" in received[-1]["text"] and "1 succeeded" in received[-1]["text"]
        with pytest.raises(OverBudget):
            run_sweep(str(spec), budget_usd=0.01, store=str(tmp_path / "other"))
        assert "Failed" in received[-1]["text"] and "over the budget" in received[-1]["text"]
    finally:
        server.shutdown()


def test_fals_own_example_prompt_plans_and_runs(fal, prefect_harness, tmp_path):
    (tmp_path / "i.png").write_bytes(make_image())
    pd.DataFrame([{"id": "fal", "image": "i.png", "prompt": FAL_EXAMPLE_PROMPT}]).to_csv(
        tmp_path / "m.csv", index=False
    )
    spec = write_case(
        tmp_path,
        rows=0,
        manifest=str(tmp_path / "m.csv"),
        endpoints=["flash"],
        grid={"resolution": ["720p"]},
        seeds=[1],
    )
    assert run_sweep(str(spec))["outcomes"] == {"archived": 1}
