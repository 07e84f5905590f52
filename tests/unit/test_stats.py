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
    assert cost["pairs"] == 4 and cost["diff"] == 1.0
    assert (cost["ci_low"], cost["ci_high"]) == (1.0, 1.0)  # every pair differs by exactly 1
    assert cost["verdict"] == "A" and cost["b_wins"] == 0.0  # lower cost is better
    wall = row(result, "wall_seconds")  # B - A = 1, 2, 3, 4
    assert wall["diff"] == 2.5 and 1.0 <= wall["ci_low"] < 2.5 < wall["ci_high"] <= 4.0
    flicker = row(result, "q_flicker")  # B - A = 0, -0.1, -0.2, -0.3: B wins 3, ties 1
    assert flicker["diff"] == pytest.approx(-0.15)
    assert flicker["b_wins"] == pytest.approx((3 + 0.5) / 4)
    cuts = row(result, "q_cuts")  # no direction: described, never judged
    assert cuts["verdict"] == "unclear"
    assert cuts["b_wins"] is None or math.isnan(cuts["b_wins"])


def test_pairs_needed_matches_the_textbook_formula():
    # n = ((z_0.975 + z_0.8) * sd / delta)^2 = ((1.95996 + 0.84162) * 1 / 0.5)^2 = 31.4 -> 32
    assert abstats.pairs_needed(1.0, 0.5) == 32
    assert abstats.pairs_needed(1.0, 0.0) is None
    wall = row(abstats.compare(table(), resolve={"wall_seconds": 0.5}), "wall_seconds")
    sd = pd.Series([1.0, 2.0, 3.0, 4.0]).std()  # 1.29
    assert wall["pairs_needed"] == abstats.pairs_needed(sd, 0.5) == 53
    assert wall["more_pairs"] == 49 and wall["more_usd"] == pytest.approx(49 * (1.0 + 2.0))


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


def test_the_bootstrap_drawn_in_slices_is_the_bootstrap_drawn_at_once():
    import numpy as np

    diffs = np.random.default_rng(3).exponential(2.0, 3000)  # 3,000 x 2,000 draws: many slices
    rng = np.random.default_rng(11)
    means = diffs[rng.integers(0, 3000, (abstats.RESAMPLES, 3000))].mean(axis=1)
    expected = (np.percentile(means, 2.5), np.percentile(means, 97.5))
    assert abstats.bootstrap_ci(diffs, seed=11) == pytest.approx(expected, abs=0, rel=1e-12)


def test_many_pairs_get_the_normal_interval_the_bootstrap_converges_to():
    import numpy as np

    diffs = np.random.default_rng(5).exponential(2.0, abstats.NORMAL_FROM) - 1.0
    half = 1.959964 * diffs.std(ddof=1) / math.sqrt(len(diffs))
    low, high = abstats.bootstrap_ci(diffs)
    assert (low, high) == pytest.approx((diffs.mean() - half, diffs.mean() + half), rel=1e-6)
    one_below = abstats.bootstrap_ci(diffs[:-1])  # resampled: the same interval, nearly
    assert one_below == pytest.approx((low, high), abs=0.1 * half)
