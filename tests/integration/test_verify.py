"""An archive that checks itself: a video lost, cut or changed in place, or a sidecar damaged,
is named by `wansweep verify`, by the report and by export, and a rerun repairs it from fal
without paying again while fal holds the result."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.helpers import run_sweep, write_case
from wansweep.errors import StoreError
from wansweep.results.export import export
from wansweep.results.report import write_report
from wansweep.results.verify import Found, verify
from wansweep.store import open_store
from wansweep.store.layout import archived_keys, report_file


def _verify_cli(store_dir, *args):
    return subprocess.run(
        [sys.executable, "-m", "wansweep.cli", "verify", str(store_dir), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def _case(tmp_path, rows):
    spec = write_case(
        tmp_path, rows=rows, endpoints=["flash"], grid={"resolution": ["720p"]}, seeds=[3]
    )
    assert run_sweep(str(spec))["outcomes"] == {"archived": rows}
    store = open_store(str(tmp_path / "archive"))
    return spec, store, sorted(archived_keys(store))


def test_a_deleted_video_is_named_everywhere_and_a_rerun_fetches_it_without_paying(
    fal, prefect_harness, tmp_path
):
    spec, store, (lost, kept) = _case(tmp_path, rows=2)
    store.delete(f"jobs/{lost}/video.mp4")

    out = _verify_cli(tmp_path / "archive")
    assert out.returncode == 1 and f"job {lost}: video_missing" in out.stdout, out.stdout
    frame, _, _ = write_report(store, "t")
    assert dict(zip(frame["job_key"], frame["status"])) == {lost: "video_lost", kept: "succeeded"}
    summary = store.get_bytes(report_file("t", "summary.md")).decode()
    assert "1 video(s) lost by the archive" in summary and lost in summary
    with pytest.raises(StoreError, match=f"1 job\\(s\\) to export lost their video.*{lost}"):
        export(store, str(tmp_path / "wds"), "webdataset")
    assert not (tmp_path / "wds").exists()  # stopped before a shard was written
    partial = export(store, str(tmp_path / "wds"), "webdataset", skip_lost=True)
    assert partial.new_rows == 1 and partial.lost == [lost]

    before = fal.stats()
    result = run_sweep(str(spec))
    after = fal.stats()
    assert result["outcomes"] == {"repaired": 1} and result["already_archived"] == 1
    assert after["submits_accepted"] == before["submits_accepted"]  # not paid again
    assert after["downloads"] == before["downloads"] + 1  # fetched from fal's copy
    clean = _verify_cli(tmp_path / "archive", "--json")
    assert clean.returncode == 0 and json.loads(clean.stdout)["findings"] == []


def test_videos_changed_in_place_and_a_damaged_sidecar_are_found_set_aside_and_repaired(
    fal, prefect_harness, tmp_path
):
    spec, store, (flipped, cut, garbled) = _case(tmp_path, rows=3)
    folder = tmp_path / "archive" / "jobs"
    video = bytearray((folder / flipped / "video.mp4").read_bytes())
    video[len(video) // 2] ^= 0x01  # one bit: same size, other bytes
    (folder / flipped / "video.mp4").write_bytes(bytes(video))
    (folder / cut / "video.mp4").write_bytes((folder / cut / "video.mp4").read_bytes()[:1000])
    (folder / garbled / "meta.json").write_text('{"job_key": "')

    found = {(f.job_key, f.found) for f in verify(store).problems}
    assert found == {
        (flipped, Found.VIDEO_SHA256),
        (cut, Found.VIDEO_SIZE),
        (garbled, Found.SIDECAR_UNREADABLE),
    }
    repaired = verify(store, sweep="t", repair=True)
    assert len(repaired.set_aside) == 3
    assert all(store.exists(k) for k in repaired.set_aside)  # kept, not deleted

    before = fal.stats()
    result = run_sweep(str(spec))
    after = fal.stats()
    assert result["outcomes"] == {"repaired": 3}
    assert after["submits_accepted"] == before["submits_accepted"]
    # the two wrong videos came from fal again; the whole one behind the damaged sidecar did not
    assert after["downloads"] == before["downloads"] + 2
    assert verify(store).problems == []


def test_a_lost_video_fal_no_longer_holds_is_paid_again_only_when_allowed(
    fal, prefect_harness, tmp_path
):
    spec, store, (lost,) = _case(tmp_path, rows=1)
    store.delete(f"jobs/{lost}/video.mp4")
    assert fal.expire_media() >= 1
    before = fal.stats()["submits_accepted"]
    result = run_sweep(str(spec))
    assert result["outcomes"] == {"expired": 1} and fal.stats()["submits_accepted"] == before
    result = run_sweep(str(spec), resubmit_expired=True)
    assert result["outcomes"] == {"archived": 1}
    assert fal.stats()["submits_accepted"] == before + 1
    assert verify(store).problems == []
