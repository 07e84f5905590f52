"""The archive on real S3 servers: the dataset index, and a full sweep on SeaweedFS."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import boto3
import pandas as pd
import pytest

from flows.dataset import dataset
from tests.helpers import make_image, write_case
from wansweep.results.report import rebuild_indexes
from wansweep.store import open_store


def put_case(s3, bucket: str, rows: int) -> str:
    lines = ["id,image,prompt,label"]
    for i in range(rows):
        s3.put_object(Bucket=bucket, Key=f"data/images/{i}.png", Body=make_image(seed=3 * i))
        lines.append(f"r{i},images/{i}.png,an s3 prompt {i},L{i}")
    s3.put_object(Bucket=bucket, Key="data/manifest.csv", Body="\n".join(lines).encode())
    return f"s3://{bucket}/data/manifest.csv"


def read_parquet(s3, bucket: str, key: str) -> pd.DataFrame:
    return pd.read_parquet(io.BytesIO(s3.get_object(Bucket=bucket, Key=key)["Body"].read()))


def test_dataset_flow_generates_only_new_rows_and_grows_the_index(
    fal, prefect_harness, tmp_path, bucket
):
    s3 = boto3.client("s3")
    manifest = put_case(s3, bucket, rows=2)
    spec = write_case(
        tmp_path,
        rows=0,
        manifest=manifest,
        store=f"s3://{bucket}/ds",
        endpoints=["flash"],
        grid={"resolution": ["720p"]},
        seeds=[1],
    )
    first = dataset(str(spec))
    assert first["ran"] == 2 and fal.stats()["submits_accepted"] == 2
    assert len(read_parquet(s3, bucket, "ds/index/all.parquet")) == 2

    manifest = put_case(s3, bucket, rows=3)  # a new row arrives
    fal.reset()
    second = dataset(str(spec))
    assert second["ran"] == 1 and second["already_archived"] == 2
    assert fal.stats()["submits_accepted"] == 1
    index = read_parquet(s3, bucket, "ds/index/all.parquet")
    assert sorted(index["row_id"]) == ["r0", "r1", "r2"]
    assert set(index["extra.label"]) == {"L0", "L1", "L2"}
    assert index["video_uri"].str.startswith(f"s3://{bucket}/ds/jobs/").all()

    s3.delete_object(Bucket=bucket, Key="ds/index/all.parquet")
    assert rebuild_indexes(open_store(f"s3://{bucket}/ds"))["all"] == 3
    assert len(read_parquet(s3, bucket, "ds/index/all.parquet")) == 3


def test_full_sweep_on_seaweedfs(fal, tmp_path, seaweedfs):
    """Manifest, images and archive on a real SeaweedFS; then index and report by the CLI."""
    env = {**os.environ, **seaweedfs, "PREFECT_SERVER_ALLOW_EPHEMERAL_MODE": "true"}
    s3 = boto3.client(
        "s3",
        endpoint_url=seaweedfs["AWS_ENDPOINT_URL"],
        aws_access_key_id=seaweedfs["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=seaweedfs["AWS_SECRET_ACCESS_KEY"],
        region_name="us-east-1",
    )
    s3.create_bucket(Bucket="weedtest")
    manifest = put_case(s3, "weedtest", rows=2)
    spec = write_case(
        tmp_path,
        rows=0,
        manifest=manifest,
        store="s3://weedtest/archive",
        endpoints=["standard", "flash"],
        grid={"resolution": ["720p"]},
        seeds=[4],
    )

    def cli(*args):
        proc = subprocess.run(
            [sys.executable, "-m", "wansweep.cli", *args],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        return proc.stdout

    cli("run", str(spec))
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="weedtest", Prefix="archive/")["Contents"]]
    assert sum(k.endswith("/video.mp4") for k in keys) == 4
    assert sum(k.endswith("/meta.json") for k in keys) == 4
    assert fal.stats()["submits_accepted"] == 4
    out = cli("index", "s3://weedtest/archive")
    assert "index/all.parquet: 4 jobs" in out
    cli("report", "s3://weedtest/archive", "--out", str(tmp_path / "rep"))
    report = pd.read_csv(tmp_path / "rep" / "t" / "jobs.csv")
    assert len(report) == 4 and set(report["status"]) == {"succeeded"}
    assert report["cost_usd"].sum() == pytest.approx(2 * (0.5 + 0.25))


def test_a_write_every_job_would_meet_is_refused_as_such_and_a_read_is_not(s3_server, bucket):
    """A bucket gone (or no permission, no room) is every job's problem: StoreRefused, which
    stops a run's submits; reading a missing key is nobody's problem."""
    from wansweep.errors import CannotRun, StoreRefused

    gone = open_store("s3://no-such-bucket-here/sweeps")
    with pytest.raises(StoreRefused, match="archive s3://no-such-bucket-here/sweeps refuses"):
        gone.put_bytes("jobs/a/meta.json", b"{}")
    with pytest.raises(StoreRefused):
        gone.create_exclusive("ledger/a.json", b"{}")
    assert issubclass(StoreRefused, CannotRun)
    assert open_store(f"s3://{bucket}/sweeps").get_bytes("jobs/a/meta.json") is None
