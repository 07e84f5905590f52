"""The blind review page in a real browser (Debian's Chromium driven by Playwright): votes by
keyboard and click land in the archive as they are cast, survive a killed server, and reach
the report; the same server streams videos from an S3 archive."""

from __future__ import annotations

import hashlib
import io
import os
import re
import signal
import subprocess
import sys

import httpx
import pandas as pd
import pytest

from flows.sweep import sweep
from tests.helpers import write_case
from wansweep.results.report import jobs_frame, write_report
from wansweep.results.review import Review, read_votes, review_pairs, serve
from wansweep.store import open_store
from wansweep.store.layout import vote_keys

ARMS = ("flash-720p", "standard-720p")


@pytest.fixture(scope="module")
def ab_archive(local_fal, prefect_harness, tmp_path_factory):
    """standard vs flash: 2 images x 2 seeds = 4 pairs."""
    local_fal.configure(media="tiny")
    tmp = tmp_path_factory.mktemp("review")
    spec = write_case(tmp, rows=2, grid={"resolution": ["720p"]})
    assert sweep(str(spec))["outcomes"] == {"archived": 8}
    local_fal.configure(media="full")
    return tmp / "archive"


def start_review(store, rater="alice"):
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "wansweep.cli",
            "review",
            str(store),
            "--sweep",
            "t",
            "--rater",
            rater,
            "--port",
            "0",
        ],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "300"},
    )
    line = proc.stdout.readline()
    url = re.search(r"open (http://\S+/)", line)
    assert url, line
    return proc, url.group(1), line


def state(page, value):
    page.wait_for_function(f"document.body.dataset.state === '{value}'", timeout=30_000)


def test_votes_by_key_and_click_survive_a_killed_server_and_reach_the_report(
    ab_archive, chromium, tmp_path
):
    from playwright.sync_api import sync_playwright

    proc, url, line = start_review(ab_archive)
    assert "4 pairs, 0 voted" in line
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=chromium,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        # the page forbids eval (its CSP); Playwright's waits evaluate strings: bypass for them
        page = browser.new_page(viewport={"width": 1200, "height": 700}, bypass_csp=True)
        try:
            page.goto(url)
            state(page, "ready")
            html = page.content()
            assert not any(arm in html for arm in ARMS)  # arms hidden until the vote
            page.wait_for_function("document.getElementById('left').readyState >= 2")
            page.screenshot(path=str(tmp_path / "review.png"))
            first = page.evaluate("document.body.dataset.pair")
            page.keyboard.press("ArrowLeft")  # a vote by key
            page.wait_for_function(f"document.body.dataset.pair !== '{first}'")
            state(page, "ready")
            assert any(arm in page.inner_text("#reveal") for arm in ARMS)  # now revealed
            second = page.evaluate("document.body.dataset.pair")
            page.click("#vote-right")  # a vote by click
            page.wait_for_function(f"document.body.dataset.pair !== '{second}'")
            state(page, "ready")
            page.keyboard.press("t")  # a tie
            page.wait_for_function(
                "document.getElementById('progress').textContent.startsWith('3 of 4')"
            )

            store = open_store(str(ab_archive))
            assert len(vote_keys(store, "t")) == 3  # written as cast
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)

            proc, url, line = start_review(ab_archive)
            assert "4 pairs, 3 voted" in line  # nothing lost; voted pairs are not asked again
            page.goto(url)
            state(page, "ready")
            page.click("#vote-left")
            state(page, "done")
            assert page.inner_text("#progress").startswith("4 of 4")
        finally:
            browser.close()
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)

    votes = read_votes(store, "t")
    assert len(votes) == 4 and votes["pair_id"].nunique() == 4
    assert (votes["rater"] == "alice").all() and (votes["winner"] == "tie").sum() == 1
    write_report(store, "t")
    table = pd.read_csv(io.BytesIO(store.get_bytes("sweeps/t/report/votes.csv")))
    assert table["votes"].sum() == 4 and table["ties"].sum() == 1
    assert "Blind review" in store.get_bytes("sweeps/t/report/summary.md").decode()


def test_the_review_server_streams_videos_from_an_s3_archive(
    local_fal, prefect_harness, tmp_path, bucket
):
    local_fal.configure(media="tiny")
    spec = write_case(
        tmp_path, rows=1, grid={"resolution": ["720p"]}, seeds=[3], store=f"s3://{bucket}/a"
    )
    assert sweep(str(spec))["outcomes"] == {"archived": 2}
    store = open_store(f"s3://{bucket}/a")
    review = Review(store, "t", review_pairs(jobs_frame(store, "t")), "bob", seed=1)
    server = serve(review)
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        shown = httpx.get(f"{base}/api/next").json()
        assert shown["progress"] == {"voted": 0, "total": 1}
        video = httpx.get(f"{base}/video/{shown['left']}").content
        left = review.shown[shown["pair"]][0]
        meta = store.get_json(f"jobs/{left}/meta.json")
        assert hashlib.sha256(video).hexdigest() == meta["video"]["sha256"]
        assert httpx.get(f"{base}/video/not-a-token").status_code == 404
        answer = httpx.post(f"{base}/api/vote", json={"pair": shown["pair"], "choice": "left"})
        assert answer.json()["winner"] == meta["arm"]
        assert httpx.post(f"{base}/api/vote", json={"pair": "x", "choice": "up"}).status_code == 400
    finally:
        server.shutdown()
    assert len(read_votes(store, "t")) == 1
