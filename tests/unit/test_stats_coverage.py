"""The report's error rates, checked by simulation on paired data with known effects: images
differ more than seeds do (the usual case), with normal and with skewed image effects.
Seeded, so each figure is the same on every run; bench/README.md has the table."""

from __future__ import annotations

import math

import numpy as np
import pytest

from wansweep.results import stats as abstats

REPS = 1000


def sweep(rng, images: int, effect: float, skewed: bool, seeds: int = 3):
    """Per-pair differences B - A and each pair's image: an image effect (sd 1) shared by
    its seeds, seed noise (sd 0.3) on top."""
    shift = rng.exponential(1.0, images) - 1.0 if skewed else rng.normal(0, 1.0, images)
    diffs = effect + np.repeat(shift, seeds) + rng.normal(0, 0.3, images * seeds)
    return diffs, np.repeat(np.arange(images), seeds)


@pytest.mark.parametrize("skewed", [False, True], ids=["normal", "skewed"])
@pytest.mark.parametrize("images", [10, 20])
def test_the_95_percent_interval_covers_the_true_difference_93_to_97_percent(images, skewed):
    rng = np.random.default_rng(images + 100 * skewed)
    covered = 0
    for rep in range(REPS):
        diffs, clusters = sweep(rng, images, 0.5, skewed)
        ci = abstats.clustered_interval(diffs, clusters, seed=rep)
        covered += ci.low <= 0.5 <= ci.high
    assert 0.93 <= covered / REPS <= 0.97


def test_with_no_effect_any_false_verdict_across_twelve_measures_stays_near_5_percent():
    rng = np.random.default_rng(7)
    any_false = any_false_uncorrected = 0
    for rep in range(200):
        p = []
        for _ in range(12):
            diffs, clusters = sweep(rng, 10, 0.0, False)
            p.append(abstats.clustered_interval(diffs, clusters, seed=rep).p)
        any_false += min(abstats.holm(p)) < abstats.ALPHA
        any_false_uncorrected += min(p) < abstats.ALPHA
    assert any_false / 200 <= 0.07
    assert any_false_uncorrected / 200 > 0.3  # what one verdict per measure would give


def test_the_p_value_and_the_interval_agree():
    rng = np.random.default_rng(3)
    for rep in range(100):
        diffs, clusters = sweep(rng, 8, 0.4, False)
        ci = abstats.clustered_interval(diffs, clusters, seed=rep)
        excludes = not (ci.low <= 0 <= ci.high)
        if not math.isclose(ci.p, abstats.ALPHA, abs_tol=0.01):  # at the edge: either side
            assert excludes == (ci.p < abstats.ALPHA)
