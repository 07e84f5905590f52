"""Exports of a real archive, loaded back with the libraries training pipelines use
(``webdataset``, ``datasets``), from a local archive and from one on the local S3 server."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tests.helpers import run_sweep, write_case
from wansweep.results.export import Filters, export, local_copy
from wansweep.store import open_store
from wansweep.store.layout import archived_keys


@pytest.fixture(scope="module")
def archive(local_fal, prefect_harness, tmp_path_factory):
    """2 images x 2 endpoints x 720p x 1 seed = 4 archived jobs (small clips)."""
    local_fal.configure(media="tiny")
    tmp = tmp_path_factory.mktemp("export")
    spec = write_case(tmp, rows=2, grid={"resolution": ["720p"]}, seeds=[1])
    assert run_sweep(str(spec))["outcomes"] == {"archived": 4}
    local_fal.configure(media="full")
    return tmp, spec


def sidecars(store) -> dict[str, dict]:
    return {k: store.get_json(f"jobs/{k}/meta.json") for k in archived_keys(store)}


def load_webdataset(folder: str) -> dict[str, dict]:
    import webdataset as wds

    shards = sorted(str(p) for p in Path(folder).glob("shard-*.tar"))
    return {s["__key__"]: s for s in wds.WebDataset(shards, shardshuffle=False, empty_check=False)}


def load_hf(folder: str) -> list[dict]:
    """As the README says to load it: the Parquet files, not the folder (``datasets`` caches a
    folder by its name, and gives an earlier export's rows after an incremental one)."""
    import datasets

    files = {"train": f"{folder}/data/*.parquet"}
    return list(datasets.load_dataset("parquet", data_files=files, split="train"))


def copy_to_s3(local_archive: Path, bucket: str) -> str:
    target = open_store(f"s3://{bucket}/archive")
    for path in local_archive.rglob("*"):
        if path.is_file():
            target.put_bytes(str(path.relative_to(local_archive)), path.read_bytes())
    return target.uri


@pytest.mark.parametrize("where", ["local", "s3"])
def test_both_formats_load_back_with_their_libraries(archive, tmp_path, where, request):
    tmp, _ = archive
    store = open_store(str(tmp / "archive"))
    if where == "s3":
        bucket = request.getfixturevalue("bucket")
        store = open_store(copy_to_s3(tmp / "archive", bucket))
        outs = {f: f"s3://{bucket}/out-{f}" for f in ("webdataset", "hf")}
    else:
        outs = {f: str(tmp_path / f) for f in ("webdataset", "hf")}
    metas = sidecars(store)

    for fmt, out in outs.items():
        result = export(store, out, fmt)
        assert result.new_rows == result.total_rows == 4
        folder, copy = local_copy(out)
        index = json.loads((Path(folder) / "export.json").read_text())
        if fmt == "webdataset":
            samples = load_webdataset(folder)
            assert set(samples) == set(metas)
            for key, s in samples.items():
                assert hashlib.sha256(s["mp4"]).hexdigest() == metas[key]["video"]["sha256"]
                row = json.loads(s["json"])
                assert row["prompt"] == metas[key]["input"]["prompt"]
                assert row["arm"] == metas[key]["arm"] and "q_motion" in row and s["jpg"]
        else:
            rows = load_hf(folder)
            assert {r["job_key"] for r in rows} == set(metas)
            for r in rows:
                assert (
                    hashlib.sha256(r["video"]).hexdigest() == metas[r["job_key"]]["video"]["sha256"]
                )
                assert r["video_sha256"] == metas[r["job_key"]]["video"]["sha256"]
        # the index lists every row with the archive's checksum
        listed = {k: h for s in index["shards"] for k, h in zip(s["keys"], s["video_sha256"])}
        assert listed == {k: m["video"]["sha256"] for k, m in metas.items()}
        if copy is not None:
            copy.cleanup()


def test_a_second_export_adds_only_new_jobs_as_new_shards(archive, tmp_path):
    tmp, spec = archive
    store = open_store(str(tmp / "archive"))
    outs = {"webdataset": str(tmp_path / "wds"), "hf": str(tmp_path / "hf")}
    for fmt, out in outs.items():
        first = export(store, out, fmt)
        assert len(first.new_shards) == 1
        assert export(store, out, fmt).new_rows == 0  # nothing new: nothing written
    assert len(load_hf(outs["hf"])) == 4

    manifest = tmp / "manifest.csv"  # the nightly manifest grows by one row
    manifest.write_text(manifest.read_text() + f"r9,img1.png,a new prompt of {tmp.name},g1\n")
    assert run_sweep(str(spec))["outcomes"] == {"archived": 2}
    for fmt, out in outs.items():
        second = export(store, out, fmt)
        assert second.new_rows == 2 and second.total_rows == 6 and len(second.new_shards) == 1
    assert second.new_shards != first.new_shards
    assert len(load_webdataset(outs["webdataset"])) == 6  # first shard untouched, new beside
    assert len(load_hf(outs["hf"])) == 6  # loaded again as documented: every row, not 4


def test_filters_keep_what_one_would_train_on(archive, tmp_path):
    tmp, _ = archive
    store = open_store(str(tmp / "archive"))
    only_flash = export(store, str(tmp_path / "a"), "webdataset", Filters(arms=["flash-720p"]))
    flash = [k for k, m in sidecars(store).items() if m["arm"] == "flash-720p"]
    assert only_flash.total_rows == len(flash) >= 2
    assert set(load_webdataset(str(tmp_path / "a"))) == set(flash)
    none = export(store, str(tmp_path / "b"), "hf", Filters(minimum={"q_motion": 2.0}))
    assert none.total_rows == 0 and not (tmp_path / "b" / "data").exists()


def test_a_killed_export_leaves_no_partial_shard(archive, tmp_path):
    tmp, _ = archive
    out = tmp_path / "killed"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "wansweep.cli",
            "export",
            str(tmp / "archive"),
            "--all",
            "--format",
            "webdataset",
            "--out",
            str(out),
        ],
        env={**os.environ, "WANSWEEP_FAULT_EXIT_MID_EXPORT": "1"},
        capture_output=True,
        timeout=300,
    )
    assert proc.returncode == 137
    assert not list(out.glob("shard-*")) and not (out / "export.json").exists()
    # and the next export writes it whole
    store = open_store(str(tmp / "archive"))
    result = export(store, str(out), "webdataset")
    assert result.total_rows == len(archived_keys(store))
    with tarfile.open(out / "shard-000000.tar") as tar:
        videos = [m for m in tar.getmembers() if m.name.endswith(".mp4")]
        assert len(videos) == result.total_rows


@pytest.mark.parametrize("fmt", ["webdataset", "hf"])
def test_a_video_that_differs_from_its_sidecar_is_never_exported(archive, tmp_path, fmt):
    import shutil

    from wansweep.errors import StoreMismatch

    tmp, _ = archive
    copy = tmp_path / "archive"
    shutil.copytree(tmp / "archive", copy)
    victim = sorted(copy.glob("jobs/*/video.mp4"))[-1]
    data = victim.read_bytes()
    victim.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))  # one bit changed after archiving
    out = tmp_path / "out"
    with pytest.raises(StoreMismatch):
        export(open_store(str(copy)), str(out), fmt)
    assert not (out / "export.json").exists() and not list(out.rglob("*.tar"))
    assert not list(out.rglob("*.parquet"))
