"""The quality detectors on the labelled clip set (tests/clipset.py), at seeds they were not
tuned on (0-2 were): recall and precision of cuts, the frozen and black shares, and how
first-frame similarity ranks drift. bench/detectors.py compares them with PySceneDetect's and
ffmpeg's; these pins keep what that comparison chose."""

from __future__ import annotations

import numpy as np
import pytest

from tests import clipset
from wansweep.media import frames, quality

SEEDS = [200, 201, 202]
MATCH_S = 0.25


class _Probe:
    fps, duration, width, height, has_audio = 16.0, 4.0, clipset.W, clipset.H, False


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clips")
    out = []
    for c in clipset.clips(SEEDS):
        path = folder / f"{c.truth.name}.mp4"
        path.write_bytes(c.data)
        decoded = quality.decode(path)
        found = [float(decoded.times[i + 1]) for i in quality.cut_steps(decoded.grey)]
        clip = quality.Clip(
            decoded, quality.Asked(c.truth.seconds, None, False, "", False), _Probe(), None
        )
        out.append((c.truth, found, quality.measure(clip)))
    return out


def _matched(truth: list[float], found: list[float]) -> int:
    left, hits = list(found), 0
    for t in truth:
        near = [f for f in left if abs(f - t) <= MATCH_S]
        if near:
            left.remove(min(near, key=lambda f: abs(f - t)))
            hits += 1
    return hits


def test_cuts_are_found_with_high_recall_and_no_false_cuts(measured):
    true = sum(len(t.cuts) for t, _, _ in measured)
    found = sum(len(f) for _, f, _ in measured)
    hits = sum(_matched(t.cuts, f) for t, f, _ in measured)
    assert true >= 25
    assert hits / true >= 0.9, f"recall {hits}/{true}"
    assert hits / found >= 0.95, f"precision {hits}/{found}"


@pytest.mark.parametrize("kind", ["cut_same_scene_low_texture", "cut_dark", "server_multishot"])
def test_every_cut_between_similar_low_texture_shots_is_found(measured, kind):
    # the cuts the detector before missed every time (issue 35): brightness and texture alike
    for truth, found, _ in measured:
        if truth.kind == kind:
            assert _matched(truth.cuts, found) == len(truth.cuts) == len(found), truth.name


@pytest.mark.parametrize(
    "kind", ["dissolve", "fast_pan", "zoom", "flash", "freeze", "fade_to_black", "flicker"]
)
def test_what_is_not_a_cut_is_not_counted_as_one(measured, kind):
    for truth, found, m in measured:
        if truth.kind == kind:
            assert found == [] and m["cuts"] == 0, (truth.name, found)


def test_frozen_and_black_shares_match_the_truth(measured):
    for truth, _, m in measured:
        if truth.kind == "freeze":
            assert abs(m["frozen_fraction"] - truth.frozen_fraction) <= 0.035, truth.name
        if truth.kind == "fade_to_black":
            assert abs(m["black_fraction"] - truth.black_fraction) <= 0.035, truth.name
        if truth.kind in ("cut_textured", "dissolve", "zoom", "fast_pan"):
            assert m["frozen_fraction"] == 0 and m["black_fraction"] == 0, truth.name


def test_a_faithful_first_frame_scores_above_every_drifted_one():
    # faithful: re-encoded, softened or brightened (what an encoder or a faithful model does);
    # drifted: moved 2% or more, zoomed 5% or more, or blended with another scene
    for seed in SEEDS:
        scored = [
            (amount, frames.similarity(image, first))
            for _, amount, image, first in clipset.drifted(np.random.default_rng([seed, 99]))
        ]
        faithful = [s for a, s in scored if a == 0]
        drifted = [s for a, s in scored if a > 0]
        assert min(faithful) > max(drifted), scored
        # and more drift scores lower on the whole
        small = [s for a, s in scored if 0 < a <= 0.1]
        large = [s for a, s in scored if a > 0.1]
        assert np.mean(large) < np.mean(small), scored


def test_a_version_marks_which_definitions_measured_a_clip(measured):
    assert {m["version"] for _, _, m in measured} == {quality.QUALITY_VERSION}
