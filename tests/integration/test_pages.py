"""The report and the review page in Chromium, at a laptop's 1280x800 and a phone's 390x844,
with landscape, portrait and square videos: no page scrolls sideways (a wide table scrolls in
its own box), every player is captioned and fits the window, the vote buttons are on screen
without scrolling, and the report's videos are linked by paths relative to it.

With WANSWEEP_SCREENSHOTS=1 the README's screenshots (docs/*.png) are made again from these."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers import make_image, run_sweep
from wansweep.results.report import jobs_frame
from wansweep.results.review import Review, review_pairs
from wansweep.results.review_server import serve
from wansweep.store import open_store

DOCS = Path(__file__).resolve().parents[2] / "docs"
SCREENS = {"laptop": (1280, 800), "phone": (390, 844)}


@pytest.fixture(scope="module")
def shapes(local_fal, prefect_harness, tmp_path_factory):
    """Three images, landscape, portrait and square; two arms; full-size clips."""
    import yaml

    local_fal.configure(media="full")
    tmp = tmp_path_factory.mktemp("pages")
    lines = ["id,image,prompt"]
    for n, (w, h) in enumerate([(640, 360), (360, 640), (480, 480)]):
        (tmp / f"img{n}.png").write_bytes(make_image(w, h, colour=(60 * n, 120, 200), seed=n))
        prompt = (
            f"a {'wide' if w > h else 'tall' if h > w else 'square'} harbour of {tmp.name} " * 4
        )
        lines.append(f"r{n},img{n}.png,{prompt.strip()}")
    (tmp / "manifest.csv").write_text("\n".join(lines) + "\n")
    spec = tmp / "spec.yaml"
    spec.write_text(
        yaml.safe_dump(
            {
                "name": "t",
                "manifest": "manifest.csv",
                "store": str(tmp / "archive"),
                "endpoints": ["standard", "flash"],
                "defaults": {"duration": 5, "resolution": "720p"},
                "seeds": [1],
            }
        )
    )
    assert run_sweep(spec, report_dir=str(tmp / "out"))["outcomes"] == {"archived": 6}
    return tmp


def measure(page) -> dict:
    return page.evaluate(
        """() => ({
        width: document.documentElement.scrollWidth, inner: innerWidth, height: innerHeight,
        videos: [...document.querySelectorAll('video')].map(v => {
            const r = v.getBoundingClientRect();
            return {w: r.width, h: r.height, src: v.getAttribute('src') || ''};
        }),
    })"""
    )


def browser(p, chromium):
    return p.chromium.launch(
        executable_path=chromium,
        args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-sync"],
    )


def shot(page, name: str) -> None:
    if os.environ.get("WANSWEEP_SCREENSHOTS"):
        page.screenshot(path=str(DOCS / name), full_page=False)


@pytest.mark.parametrize("screen", list(SCREENS))
def test_the_report_fits_the_screen(shapes, chromium, screen):
    from playwright.sync_api import sync_playwright

    width, height = SCREENS[screen]
    for page_file in (shapes / "archive/sweeps/t/report/report.html", shapes / "out/report.html"):
        with sync_playwright() as p:
            b = browser(p, chromium)
            page = b.new_page(viewport={"width": width, "height": height})
            page.goto(page_file.as_uri())
            page.wait_for_function(
                "[...document.querySelectorAll('video')].every(v => v.readyState >= 1)"
            )
            seen = measure(page)
            assert seen["width"] <= seen["inner"], seen  # no sideways scroll of the page
            assert len(seen["videos"]) == 6  # 3 pairs, each captioned, each video loaded
            for video in seen["videos"]:
                assert not video["src"].startswith(("/", "file:")), video  # relative
                assert 0 < video["w"] <= width and 0 < video["h"] <= height, video
            text = page.inner_text("body")
            assert all(f"row r{n}, seed 1" in text for n in range(3))  # pairs captioned
            pairs_note = page.locator("p.meta", has_text="shows them all").inner_text()
            assert "`" not in pairs_note  # code shows as code, not as backticks
            if screen == "laptop" and "archive" in str(page_file):
                shot(page, "report.png")
            b.close()


@pytest.mark.parametrize("screen", list(SCREENS))
def test_the_review_page_fits_the_screen_with_its_buttons_in_view(shapes, chromium, screen):
    from playwright.sync_api import sync_playwright

    width, height = SCREENS[screen]
    store = open_store(str(shapes / "archive"))
    review = Review(store, "t", review_pairs(jobs_frame(store, "t")), f"fit-{screen}", seed=4)
    server = serve(review)
    try:
        with sync_playwright() as p:
            b = browser(p, chromium)
            page = b.new_page(viewport={"width": width, "height": height}, bypass_csp=True)
            page.goto(server.url)
            for _ in range(3):  # landscape, portrait and square pairs, in a random order
                page.wait_for_function("document.body.dataset.state === 'ready'")
                page.wait_for_function(
                    "['left','right','input'].every(id => { const e = document.getElementById(id);"
                    " return e.tagName === 'IMG' ? e.naturalWidth > 0 : e.readyState >= 1; })"
                )
                seen = measure(page)
                assert seen["width"] <= seen["inner"], seen
                for video in seen["videos"]:
                    assert 0 < video["w"] <= width and video["h"] <= height, video
                for button in ("vote-left", "vote-right", "vote-tie", "vote-skip"):
                    box = page.locator(f"#{button}").bounding_box()
                    assert box["y"] + box["height"] <= height, (button, box)  # no scrolling
                assert "harbour" in page.inner_text("#prompt")
                if screen == "laptop":
                    shot(page, "review.png")
                pair = page.evaluate("document.body.dataset.pair")
                page.click("#vote-skip")
                page.wait_for_function(
                    f"document.body.dataset.state === 'done' || "
                    f"document.body.dataset.pair !== '{pair}'"
                )
            page.wait_for_function("document.body.dataset.state === 'done'")
            assert page.inner_text("#progress").startswith("0 of 3 voted, 3 skipped")
            assert page.locator("#vote-left").is_disabled()  # done: nothing looks live
            b.close()
    finally:
        server.shutdown()
