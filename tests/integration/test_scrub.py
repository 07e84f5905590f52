"""Secrets never leave, end to end: a presigned URL in fal's error text reaches no ledger, report or log."""

from __future__ import annotations

import json

import boto3
import pandas as pd

from tests.helpers import make_image, run_sweep, write_case
from wansweep.plan.spec import load_spec
from wansweep.run.ledger import Ledger
from wansweep.store import open_store


def test_a_presigned_url_in_fals_error_reaches_no_ledger_report_or_log(
    fal, prefect_harness, tmp_path, bucket, caplog
):
    s3 = boto3.client("s3")
    s3.put_object(Bucket=bucket, Key="in/a.png", Body=make_image())
    s3.put_object(Bucket=bucket, Key="in/m.csv", Body=b"id,image,prompt\nr1,a.png,private\n")
    fal.configure(faults="fetch_fail=1.0")  # fal's error quotes the URL it could not fetch
    spec = write_case(
        tmp_path,
        rows=0,
        manifest=f"s3://{bucket}/in/m.csv",
        endpoints=["flash"],
        grid={"resolution": ["720p"]},
        seeds=[1],
    )
    result = run_sweep(str(spec))
    assert result["outcomes"] == {"failed": 1}
    store = open_store(load_spec(spec).store)
    entry = next(iter(Ledger(store).all().values()))
    report = pd.read_csv(result["report"]["jobs_csv"])
    parquet = pd.read_parquet(result["report"]["jobs_parquet"])
    texts = {
        "ledger": json.dumps(entry.to_json()),
        "csv": report.to_csv(),
        "parquet": parquet.to_csv(),
        "log": caplog.text,
    }
    assert "Failed to download" in texts["ledger"]  # the error is there, readable
    for where, text in texts.items():
        for secret in ("X-Amz-Signature", "X-Amz-Credential", "test:", "AKIA"):
            assert secret not in text, (where, secret)
