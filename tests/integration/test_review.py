"""The blind review page in a real browser (Debian's Chromium driven by Playwright): votes by
keyboard and click land in the archive as they are cast, survive a killed server, and reach
the report; the same server streams videos from an S3 archive."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import signal
import subprocess
import sys

import httpx
import pandas as pd
import pytest

from tests.helpers import run_sweep, write_case
from wansweep.results.report import jobs_frame, write_report
from wansweep.results.review import Review, read_votes, review_pairs
from wansweep.results.review_server import serve
from wansweep.store import open_store
from wansweep.store.layout import vote_keys

ARMS = ("flash-720p", "standard-720p")


@pytest.fixture(scope="module")
def ab_archive(local_fal, prefect_harness, tmp_path_factory):
    """standard vs flash: 2 images x 2 seeds = 4 pairs."""
    local_fal.configure(media="tiny")
    tmp = tmp_path_factory.mktemp("review")
    spec = write_case(tmp, rows=2, grid={"resolution": ["720p"]})
    assert run_sweep(str(spec))["outcomes"] == {"archived": 8}
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
    url = re.search(r"open (http://\S+)", line)
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
    assert run_sweep(str(spec))["outcomes"] == {"archived": 2}
    store = open_store(f"s3://{bucket}/a")
    review = Review(store, "t", review_pairs(jobs_frame(store, "t")), "bob", seed=1)
    server = serve(review)
    token = {"X-Review-Token": server.token}
    try:
        with httpx.Client(base_url=server.base, headers=token) as http:
            shown = http.get("/api/next").json()
            assert shown["progress"] == {"voted": 0, "skipped": 0, "total": 1}
            assert "number 0" in shown["prompt"] and shown["seed"] == 3 and shown["row"] == "r0"
            video = http.get(f"/media/{shown['left']}")
            assert video.headers["accept-ranges"] == "bytes"
            left = review.shown[shown["pair"]][0]
            meta = store.get_json(f"jobs/{left}/meta.json")
            assert hashlib.sha256(video.content).hexdigest() == meta["video"]["sha256"]
            part = http.get(f"/media/{shown['left']}", headers={"Range": "bytes=100-199"})
            assert part.status_code == 206 and part.content == video.content[100:200]
            size = len(video.content)
            assert part.headers["content-range"] == f"bytes 100-199/{size}"
            tail = http.get(f"/media/{shown['left']}", headers={"Range": "bytes=-50"})
            assert tail.status_code == 206 and tail.content == video.content[-50:]
            image = http.get(f"/media/{shown['input']}")
            assert image.status_code == 200 and image.content[:4] == b"\x89PNG"
            assert http.get("/media/not-a-token").status_code == 404
            answer = http.post("/api/vote", json={"pair": shown["pair"], "choice": "left"})
            assert answer.json()["winner"] == meta["arm"]
            assert http.post("/api/vote", json={"pair": "x", "choice": "up"}).status_code == 400
    finally:
        server.shutdown()
    assert len(read_votes(store, "t")) == 1


def browser(p, chromium, *args):
    return p.chromium.launch(
        executable_path=chromium,
        args=[
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            *args,
        ],
    )


def test_a_page_of_another_origin_can_neither_read_nor_vote_nor_fetch(ab_archive, chromium):
    """DNS rebinding (a name of the attacker's that resolves to 127.0.0.1: its page is then
    same-origin with the review server), and a plain cross-site page: neither reads a pair,
    casts a vote, nor fetches a video; the page's own user still can."""
    from playwright.sync_api import sync_playwright

    store = open_store(str(ab_archive))
    before = len(vote_keys(store, "t"))
    review = Review(store, "t", review_pairs(jobs_frame(store, "t")), "eve-target", seed=2)
    server = serve(review)
    leaked = review.next()  # even with a video token that leaked, rebinding reads nothing
    port = server.port
    attack = f"""<script>
    async function go() {{
      const out = {{}};
      for (const [name, url, init] of [
        ['next', '/api/next', {{headers: {{'X-Review-Token': 'guess'}}}}],
        ['next-bare', '/api/next', {{}}],
        ['vote', '/api/vote', {{method: 'POST', headers: {{'Content-Type': 'text/plain'}},
          body: JSON.stringify({{pair: '{leaked["pair"]}', choice: 'left'}})}}],
        ['video', '/media/{leaked["left"]}', {{}}],
        ['page', '/', {{}}],
      ]) {{
        try {{ const r = await fetch(url, init); out[name] = r.status; }}
        catch (e) {{ out[name] = 'blocked'; }}
      }}
      try {{  // cross-origin, to the real address: no CORS answer, so nothing is readable
        const r = await fetch('http://127.0.0.1:{port}/api/next', {{headers: {{'X-Review-Token': 'x'}}}});
        out.cross = r.status;
      }} catch (e) {{ out.cross = 'blocked'; }}
      document.body.dataset.result = JSON.stringify(out);
    }}
    go();
    </script>"""
    form = f"""<form id=f method=POST action="http://127.0.0.1:{port}/api/vote" enctype="text/plain">
    <input name='{{"pair":"{leaked["pair"]}","choice":"left","x":"' value='"}}'></form>
    <script>document.getElementById('f').submit()</script>"""
    try:
        with sync_playwright() as p:
            b = browser(
                p,
                chromium,
                "--host-resolver-rules=MAP evil.test 127.0.0.1",
                # the browser's own guard for pages reaching local addresses, off: what is
                # tested is the server's, which must hold in a browser without it
                "--disable-features=BlockInsecurePrivateNetworkRequests,"
                "PrivateNetworkAccessSendPreflights,PrivateNetworkAccessRespectPreflightResults,"
                "LocalNetworkAccessChecks",
            )
            page = b.new_page()
            page.route(
                f"http://evil.test:{port}/attack.html",
                lambda route: route.fulfill(body=attack, content_type="text/html"),
            )
            page.goto(f"http://evil.test:{port}/attack.html")
            page.wait_for_function("document.body.dataset.result !== undefined")
            result = json.loads(page.evaluate("document.body.dataset.result"))
            assert all(result[k] == 421 for k in ("next", "next-bare", "vote", "video", "page")), (
                result
            )
            assert result["cross"] == "blocked"  # the preflight gets no CORS answer

            page.route(
                "http://attacker.test/form.html",
                lambda route: route.fulfill(body=form, content_type="text/html"),
            )
            with page.expect_response(f"http://127.0.0.1:{port}/api/vote") as posted:
                page.goto("http://attacker.test/form.html")
            assert posted.value.status == 403  # a foreign Origin (and not JSON, no token)
            b.close()
        assert len(vote_keys(store, "t")) == before  # nothing recorded
        assert review.voted == 0 and review.queue[0].pair_id == leaked["pair"]
    finally:
        server.shutdown()


def test_seeking_one_player_keeps_the_other_in_step(ab_archive, chromium):
    from playwright.sync_api import sync_playwright

    store = open_store(str(ab_archive))
    review = Review(store, "t", review_pairs(jobs_frame(store, "t")), "seeker", seed=3)
    server = serve(review)
    try:
        with sync_playwright() as p:
            b = browser(p, chromium)
            page = b.new_page(viewport={"width": 1280, "height": 800}, bypass_csp=True)
            page.goto(server.url)
            state(page, "ready")
            page.wait_for_function(
                "['left','right'].every(id => document.getElementById(id).readyState >= 1)"
            )
            duration = page.evaluate("document.getElementById('left').duration")
            assert page.evaluate("document.getElementById('left').seekable.length") == 1
            for target in (0.6 * duration, 0.2 * duration):
                page.evaluate(f"document.getElementById('left').currentTime = {target}")
                page.wait_for_function(
                    "(() => { const l = document.getElementById('left'), r = "
                    "document.getElementById('right'); return !l.seeking && !r.seeking && "
                    f"Math.abs(r.currentTime - {target}) < 0.1; }})()"
                )
                gap = page.evaluate(
                    "Math.abs(document.getElementById('left').currentTime - "
                    "document.getElementById('right').currentTime)"
                )
                assert gap < 0.1
            b.close()
    finally:
        server.shutdown()
