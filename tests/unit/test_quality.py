"""Quality metrics on clips whose truth is known: the local server's renderer puts cuts at
the prompt's Shot markers and renders frozen or black stretches when the prompt asks."""

from __future__ import annotations

import pytest

from tests.fal_examples import FAL_EXAMPLE_PROMPT
from tests.helpers import make_image
from wansweep.localfal.video import render_clip
from wansweep.media import frames as media
from wansweep.media import quality


def measured(tmp_path, prompt, duration="5", multi_shots=False, short_side=64, audio=False):
    clip = render_clip(
        make_image(640, 360),
        prompt=prompt,
        seed=3,
        resolution="720p",
        duration=duration,
        multi_shots=multi_shots,
        short_side=short_side,
    )
    path = tmp_path / "v.mp4"
    path.write_bytes(clip.data)
    asked = quality.Asked(float(duration), 720, multi_shots, prompt, audio)
    decoded = quality.decode(path)
    assert len(decoded.picks) == 3
    return quality.measure(quality.Clip(decoded, asked, media.probe(path), 0.97))


def test_fals_four_shot_example_at_15s_has_three_cuts_near_4_8_and_12s(tmp_path):
    m = measured(tmp_path, FAL_EXAMPLE_PROMPT, duration="15", multi_shots=True)
    assert m["cuts"] == 3 and m["cuts_expected"] == 3 and m["cuts_unexpected"] == 0
    assert m["cut_times"] == pytest.approx([4.0, 8.0, 12.0], abs=0.25)
    assert m["cut_error_s"] <= 0.25


def test_a_plain_clip_moves_without_cuts_freezes_or_black_frames(tmp_path):
    m = measured(tmp_path, "a calm pan across the scene")
    assert m["cuts"] == 0 and "cuts_expected" not in m  # no multi_shots asked
    assert m["motion"] > 0 and m["frozen_fraction"] < 0.05 and m["black_fraction"] == 0


def test_a_frozen_stretch_is_measured(tmp_path):
    m = measured(tmp_path, "then it stops, Freeze [1-3s], and moves again")
    assert m["frozen_fraction"] == pytest.approx(0.4, abs=0.05)
    assert m["cuts"] == 0  # resuming motion is not a cut


def test_a_black_stretch_is_measured(tmp_path):
    m = measured(tmp_path, "a blackout, Black [2-3s], then light")
    assert m["black_fraction"] == pytest.approx(0.2, abs=0.03)


def test_compliance_compares_output_with_what_was_asked(tmp_path):
    small = measured(tmp_path, "p", short_side=64)  # cheap media: not the 720 px asked
    assert small["resolution_ok"] is False and small["compliant"] is False
    asked_audio = measured(tmp_path, "p", short_side=None, audio=True)  # no audio came back
    assert asked_audio["resolution_ok"] and asked_audio["audio_ok"] is False
    assert asked_audio["duration_error_s"] == pytest.approx(0.0, abs=0.1)
    assert asked_audio["compliant"] is False


def test_every_metric_is_documented_with_a_direction_the_statistics_can_read():
    for m in quality.METRICS.values():
        assert m.meaning and m.range and m.better in ("higher", "lower", None)
