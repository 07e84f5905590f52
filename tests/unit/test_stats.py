"""Paired statistics checked against values worked out by hand on a small table."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from wansweep.results import stats as abstats


def table():
    """Arms A and B on 4 inputs x 1 seed, plus a fifth input only A ran (not a pair)."""
    rows = []
    cost = {"A": [1.0, 1.0, 1.0, 1.0, 1.0], "B": [2.0, 2.0, 2.0, 2.0]}
    wall = {"A": [10.0, 10.0, 10.0, 10.0, 50.0], "B": [11.0, 12.0, 13.0, 14.0]}
    flicker = {"A": [0.1, 0.2, 0.3, 0.4, 0.0], "B": [0.1, 0.1, 0.1, 0.1]}
    for arm in ("A", "B"):
        for i in range(len(cost[arm])):
            rows.append(
                {
                    "arm": arm,
                    "image_sha256": f"img{i}",
                    "prompt": "p",
                    "seed_requested": 7,
                    "status": "succeeded",
                    "cost_usd": cost[arm][i],
                    "estimated_usd": cost[arm][i],
                    "wall_seconds": wall[arm][i],
                    "q_flicker": flicker[arm][i],
                    "q_cuts": 0,
                }
            )
    rows.append({**rows[0], "status": "failed", "image_sha256": "img9"})  # not a pair
    return pd.DataFrame(rows)


def row(result, measure):
    (found,) = result[result["measure"] == measure].to_dict("records")
    return found


def test_differences_intervals_and_verdicts():
    result = abstats.compare(table())
    cost = row(result, "cost_usd")
    assert cost["pairs"] == 4 and cost["images"] == 4 and cost["diff"] == 1.0
    assert (cost["ci_low"], cost["ci_high"]) == (1.0, 1.0)  # every pair differs by exactly 1
    assert cost["verdict"] == "A" and cost["b_wins"] == 0.0  # lower cost is better
    wall = row(result, "wall_seconds")  # B - A = 1, 2, 3, 4 on four images
    assert wall["diff"] == 2.5 and 0 < wall["ci_low"] < 1.0 and wall["ci_high"] > 4.0
    # p 0.025 alone; Holm over the 3 directed measures doubles it: four images do not settle it
    assert wall["p"] < 0.05 <= wall["p_adjusted"] and wall["verdict"] == "unclear"
    assert wall["error_rate"] == "5% family-wise over 3 measures (Holm)"
    flicker = row(result, "q_flicker")  # B - A = 0, -0.1, -0.2, -0.3: B wins 3, ties 1
    assert flicker["diff"] == pytest.approx(-0.15)
    assert flicker["b_wins"] == pytest.approx((3 + 0.5) / 4)
    cuts = row(result, "q_cuts")  # no direction: described, never judged
    assert cuts["verdict"] == "unclear" and cuts["role"] == "described"
    assert cuts["b_wins"] is None or math.isnan(cuts["b_wins"])


def test_the_primary_measure_is_judged_alone_and_the_rest_with_holm():
    result = abstats.compare(table(), primary="wall_seconds")
    wall = row(result, "wall_seconds")
    assert wall["role"] == "primary" and wall["error_rate"] == "5% (the primary measure)"
    assert wall["p_adjusted"] == wall["p"] < 0.05 and wall["verdict"] == "A"
    flicker = row(result, "q_flicker")
    assert flicker["error_rate"] == "5% family-wise over 2 measures (Holm)"


def test_holm_adjusts_step_down_and_keeps_the_order():
    assert abstats.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert abstats.holm([0.2, math.nan]) == [0.2, pytest.approx(math.nan, nan_ok=True)]


def test_pairs_needed_is_the_t_test_sample_size():
    # n = ((t_0.975,n-1 + t_0.8,n-1) * sd / delta)^2, solved for n: 34 (the normal's 32
    # undercounts at small n)
    assert abstats.pairs_needed(1.0, 0.5) == 34
    assert abstats.pairs_needed(1.0, 0.0) is None
    assert abstats.pairs_needed(1.0, 0.5, per_image=3) == 102  # images needed x pairs each
    wall = row(abstats.compare(table(), resolve={"wall_seconds": 0.5}), "wall_seconds")
    sd = pd.Series([1.0, 2.0, 3.0, 4.0]).std()  # 1.29, between images
    assert wall["pairs_needed"] == abstats.pairs_needed(sd, 0.5) == 55
    assert wall["more_pairs"] == 51 and wall["more_usd"] == pytest.approx(51 * (1.0 + 2.0))


def test_seed_spread_is_the_mean_sd_across_seeds_per_input():
    t = table()
    extra = t[t["arm"] == "B"].head(2).assign(seed_requested=8, wall_seconds=[13.0, 16.0])
    spread = abstats.seed_spread(pd.concat([t, extra]))
    b = spread[(spread["arm"] == "B") & (spread["measure"] == "wall_seconds")].iloc[0]
    # img0: sd(11, 13) = 1.414; img1: sd(12, 16) = 2.828 -> mean 2.121
    assert b["inputs"] == 2 and b["seed_sd"] == pytest.approx((2**0.5 + 2 * 2**0.5) / 2)


def test_wilson_interval_by_hand():
    # p = 0.8, n = 10, z = 1.96: centre 0.7167, half-width 0.2266 -> (0.4902, 0.9433)
    low, high = abstats.wilson(8, 10)
    assert (round(low, 4), round(high, 4)) == (0.4902, 0.9433)


def votes(*games):
    """(a, b, winner) triples as a votes table."""
    return pd.DataFrame(games, columns=["arm_a", "arm_b", "winner"])


def test_vote_table_orders_arms_counts_ties_half_and_ignores_skips():
    v = votes(
        *[("y", "x", "y")] * 6,  # listed B-first: counted for the pair (x, y)
        *[("x", "y", "x")] * 2,
        ("x", "y", "tie"),
        ("x", "y", "skip"),
    )
    (row,) = abstats.vote_table(v).to_dict("records")
    assert (row["arm_a"], row["arm_b"], row["votes"], row["ties"]) == ("x", "y", 9, 1)
    assert row["b_wins"] == 6.5 and row["b_win_rate"] == pytest.approx(6.5 / 9)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx(abstats.wilson(6.5, 9))
    assert row["verdict"] == "unclear"  # 9 votes cannot exclude 50% here


def test_bradley_terry_ranks_a_consistent_order():
    games = (
        [("a", "b", "a")] * 8
        + [("a", "b", "b")] * 2
        + [("b", "c", "b")] * 8
        + [("b", "c", "c")] * 2
        + [("a", "c", "a")] * 9
        + [("a", "c", "c")] * 1
    )
    ranking = abstats.bradley_terry(votes(*games), resamples=100)
    assert list(ranking["arm"]) == ["a", "b", "c"] and list(ranking["rank"]) == [1, 2, 3]
    assert ranking["strength"].sum() == pytest.approx(1.0)
    assert (ranking["ci_low"] <= ranking["strength"]).all()
    assert (ranking["strength"] <= ranking["ci_high"]).all()


def test_pairs_of_one_image_are_resampled_together():
    """Ten images, five seeds each, images far apart: the interval is as wide as ten
    observations allow, not as fifty independent ones would."""
    import numpy as np

    rng = np.random.default_rng(2)
    image_effect = np.repeat(rng.normal(0, 1.0, 10), 5)
    diffs = 0.5 + image_effect + rng.normal(0, 0.1, 50)
    clusters = np.repeat(np.arange(10), 5)
    clustered = abstats.clustered_interval(diffs, clusters)
    naive = abstats.clustered_interval(diffs, np.arange(50))  # each pair its own image
    assert clustered.images == 10 and naive.images == 50
    assert (clustered.high - clustered.low) > 1.8 * (naive.high - naive.low)


def test_one_image_gives_no_interval():
    import numpy as np

    found = abstats.clustered_interval(np.array([1.0, 2.0, 3.0]), np.array(["a", "a", "a"]))
    assert math.isnan(found.low) and math.isnan(found.p) and found.images == 1


def test_many_images_get_the_normal_interval_the_bootstrap_t_converges_to():
    import numpy as np

    n = abstats.NORMAL_FROM
    diffs = np.random.default_rng(5).exponential(2.0, n) - 1.0
    half = 1.959964 * diffs.std(ddof=1) / math.sqrt(n)  # one pair per image: the plain SE
    found = abstats.clustered_interval(diffs, np.arange(n))
    assert (found.low, found.high) == pytest.approx(
        (diffs.mean() - half, diffs.mean() + half), rel=1e-6
    )
    resampled = abstats.clustered_interval(diffs[:-1], np.arange(n - 1))
    assert (resampled.low, resampled.high) == pytest.approx((found.low, found.high), abs=0.1 * half)
