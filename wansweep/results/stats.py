"""Which arm is better, and is the difference real: paired statistics over a sweep's jobs.

Jobs of two arms that share an image, a prompt and a requested seed are a *pair*: the same
question asked of both arms, so their difference is the arms' difference and not the
inputs'. For each pair of arms and each measure (cost, latency, every quality metric):

- ``diff``: mean of (B - A) over pairs, with a bootstrap 95% interval (pairs resampled;
  from ``NORMAL_FROM`` pairs on, the normal interval the bootstrap converges to, which costs
  no resampling: a 100,000-job A/B would otherwise resample 50,000 pairs 2,000 times per
  measure);
- ``verdict``: which arm is better when the interval excludes 0 and the measure has a
  direction (``wansweep.media.quality.METRICS``; cost and latency: lower), else ``unclear``;
- ``b_wins``: share of pairs where B is better (ties count half), for directed measures;
- ``pairs_needed``: about how many pairs a paired test (alpha 0.05, power 0.8) needs to tell
  a difference of ``resolve`` (default: the observed one) from none, and what the extra
  pairs would cost at the plan's prices.

:func:`seed_spread` says how much each arm varies across seeds for the same input. Plain
pandas and numpy; the statistics are textbook (percentile bootstrap; normal-approximation
sample size), so the numbers can be checked by hand.
"""

from __future__ import annotations

import math
from itertools import combinations
from statistics import NormalDist

import numpy as np
import pandas as pd

from wansweep.media.quality import METRICS

PAIR_KEY = ["image_sha256", "prompt", "seed_requested"]
BASE_MEASURES = {"cost_usd": "lower", "wall_seconds": "lower"}
RESAMPLES = 2000
NORMAL_FROM = 5000  # pairs; the mean's bootstrap distribution is normal well before this
_CHUNK = 1 << 20  # index draws held at once while resampling (8 MB)


def measures(frame: pd.DataFrame) -> dict[str, str | None]:
    """Measure column -> better direction, for the columns this frame has."""
    found = {**BASE_MEASURES, **{f"q_{n}": m.better for n, m in METRICS.items()}}
    found["first_frame_similarity"] = found.pop("q_first_frame_similarity")
    return {c: d for c, d in found.items() if c in frame.columns}


def paired(frame: pd.DataFrame, a: str, b: str, column: str) -> pd.DataFrame:
    """Pairs of arms ``a`` and ``b`` with a value of ``column`` on both sides."""
    done = frame[(frame["status"] == "succeeded") & frame[column].notna()]
    key = pd.Series("", index=done.index)
    for column_name in PAIR_KEY:
        key = key + "|" + done[column_name].astype(str)
    sides = [
        done[done["arm"] == arm].assign(_key=key).drop_duplicates("_key").set_index("_key")[column]
        for arm in (a, b)
    ]
    both = pd.concat(sides, axis=1, keys=["a", "b"], join="inner").astype(float)
    return both


def bootstrap_ci(diffs: np.ndarray, resamples: int = RESAMPLES, seed: int = 0):
    """95% interval of the mean of ``diffs``: the percentile bootstrap below ``NORMAL_FROM``
    values, the normal interval from there on. Memory stays bounded whatever the size (the
    resamples are drawn a slice at a time, and give the same interval as drawn at once)."""
    n = len(diffs)
    if n < 2:
        return (math.nan, math.nan)
    if n >= NORMAL_FROM:
        half = NormalDist().inv_cdf(0.975) * float(np.std(diffs, ddof=1)) / math.sqrt(n)
        mean = float(np.mean(diffs))
        return mean - half, mean + half
    rng = np.random.default_rng(seed)
    step = max(1, _CHUNK // n)
    means = np.concatenate(
        [
            diffs[rng.integers(0, n, (min(step, resamples - done), n))].mean(axis=1)
            for done in range(0, resamples, step)
        ]
    )
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def pairs_needed(sd: float, delta: float, alpha: float = 0.05, power: float = 0.8) -> int | None:
    """Pairs a paired two-sided test needs to detect a mean difference ``delta``."""
    if not delta or not np.isfinite(sd) or not np.isfinite(delta):
        return None
    z = NormalDist().inv_cdf(1 - alpha / 2) + NormalDist().inv_cdf(power)
    return max(2, math.ceil((z * sd / abs(delta)) ** 2))


def compare(
    frame: pd.DataFrame, resolve: dict[str, float] | None = None, seed: int = 0
) -> pd.DataFrame:
    """One row per (arm A, arm B, measure); see the module docstring for the columns.
    ``resolve``: measure -> the difference worth resolving (default: the observed one)."""
    arms = sorted(a for a in frame["arm"].dropna().unique())
    price = frame.groupby("arm")["estimated_usd"].mean() if "estimated_usd" in frame else None
    rows = []
    for a, b in combinations(arms, 2):
        for column, better in measures(frame).items():
            both = paired(frame, a, b, column)
            if both.empty:
                continue
            diffs = (both["b"] - both["a"]).to_numpy()
            low, high = bootstrap_ci(diffs, seed=seed)
            mean = float(diffs.mean())
            sd = float(diffs.std(ddof=1)) if len(diffs) > 1 else math.nan
            needed = pairs_needed(sd, (resolve or {}).get(column, mean))
            more = max(0, needed - len(diffs)) if needed else None
            row = {
                "arm_a": a,
                "arm_b": b,
                "measure": column,
                "better": better or "",
                "pairs": len(diffs),
                "mean_a": float(both["a"].mean()),
                "mean_b": float(both["b"].mean()),
                "diff": mean,
                "ci_low": low,
                "ci_high": high,
                "verdict": _verdict(better, low, high, a, b),
                "b_wins": _wins(both, better),
                "pairs_needed": needed,
                "more_pairs": more,
                "more_usd": round(more * float(price[a] + price[b]), 2)
                if more is not None and price is not None
                else None,
            }
            rows.append(row)
    return pd.DataFrame(rows)


def _verdict(better: str | None, low: float, high: float, a: str, b: str) -> str:
    if not better or math.isnan(low) or low <= 0 <= high:
        return "unclear"
    b_higher = low > 0
    return b if b_higher == (better == "higher") else a


def _wins(both: pd.DataFrame, better: str | None) -> float | None:
    if not better:
        return None
    sign = 1 if better == "higher" else -1
    d = sign * (both["b"] - both["a"])
    return float(((d > 0) + 0.5 * (d == 0)).mean())


def seed_spread(frame: pd.DataFrame) -> pd.DataFrame:
    """Per arm and measure: the mean, over inputs run with several seeds, of the standard
    deviation across those seeds (how much a seed alone changes the outcome)."""
    done = frame[frame["status"] == "succeeded"]
    rows = []
    for column in measures(frame):
        groups = done.groupby(["arm", "image_sha256", "prompt"], dropna=False)[column]
        spread = groups.std(ddof=1).dropna()
        if spread.empty:
            continue
        per_arm = spread.groupby(level="arm")
        for arm, values in per_arm:
            rows.append(
                {"arm": arm, "measure": column, "inputs": len(values), "seed_sd": values.mean()}
            )
    return pd.DataFrame(rows, columns=["arm", "measure", "inputs", "seed_sd"])


# ---------------------------------------------------------------- blind-review votes
def wilson(wins: float, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score 95% interval of a proportion (ties counted as half a win)."""
    if n == 0:
        return (math.nan, math.nan)
    p = wins / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def vote_table(votes: pd.DataFrame) -> pd.DataFrame:
    """Per pair of arms: votes, B's wins (ties half), B's win rate and its Wilson interval.
    ``votes``: one row per vote with ``arm_a``, ``arm_b`` and ``winner`` (an arm or "tie");
    skips are not votes."""
    rows = []
    cast = votes[votes["winner"] != "skip"]
    for (a, b), group in _ordered(cast).groupby(["arm_a", "arm_b"]):
        n = len(group)
        wins = float((group["winner"] == b).sum() + 0.5 * (group["winner"] == "tie").sum())
        low, high = wilson(wins, n)
        rows.append(
            {
                "arm_a": a,
                "arm_b": b,
                "votes": n,
                "ties": int((group["winner"] == "tie").sum()),
                "b_wins": wins,
                "b_win_rate": wins / n,
                "ci_low": low,
                "ci_high": high,
                "verdict": b if low > 0.5 else a if high < 0.5 else "unclear",
            }
        )
    return pd.DataFrame(
        rows,
        columns=[
            "arm_a",
            "arm_b",
            "votes",
            "ties",
            "b_wins",
            "b_win_rate",
            "ci_low",
            "ci_high",
            "verdict",
        ],
    )


def _ordered(votes: pd.DataFrame) -> pd.DataFrame:
    """Each vote with its two arms in name order (A < B)."""
    swap = votes["arm_a"] > votes["arm_b"]
    out = votes.copy()
    out.loc[swap, ["arm_a", "arm_b"]] = votes.loc[swap, ["arm_b", "arm_a"]].to_numpy()
    return out


def bradley_terry(votes: pd.DataFrame, resamples: int = 500, seed: int = 0) -> pd.DataFrame:
    """Arms ranked by Bradley-Terry strength (a tie is half a win each way), with a
    bootstrap 95% interval over votes; strengths are scaled so they sum to 1."""
    cast = votes[votes["winner"] != "skip"]
    arms = sorted(set(cast["arm_a"]) | set(cast["arm_b"]))
    if len(arms) < 2 or cast.empty:
        return pd.DataFrame(columns=["arm", "strength", "ci_low", "ci_high", "rank"])
    index = {a: i for i, a in enumerate(arms)}
    ia = cast["arm_a"].map(index).to_numpy()
    ib = cast["arm_b"].map(index).to_numpy()
    wa = np.where(cast["winner"] == cast["arm_a"], 1.0, np.where(cast["winner"] == "tie", 0.5, 0.0))

    def fit(sel: np.ndarray) -> np.ndarray:
        k = len(arms)
        wins = np.zeros((k, k))
        np.add.at(wins, (ia[sel], ib[sel]), wa[sel])
        np.add.at(wins, (ib[sel], ia[sel]), 1.0 - wa[sel])
        games = wins + wins.T
        strength = np.ones(k)
        for _ in range(200):  # Zermelo / MM iterations
            denom = (games / (strength[:, None] + strength[None, :])).sum(axis=1)
            new = (wins.sum(axis=1) + 0.1) / np.maximum(denom, 1e-12)  # 0.1: a small prior
            new /= new.sum()
            converged = np.allclose(new, strength, atol=1e-9)
            strength = new
            if converged:
                break
        return strength

    point = fit(np.arange(len(cast)))
    rng = np.random.default_rng(seed)
    boot = np.array([fit(rng.integers(0, len(cast), len(cast))) for _ in range(resamples)])
    low, high = np.percentile(boot, [2.5, 97.5], axis=0)
    out = pd.DataFrame({"arm": arms, "strength": point, "ci_low": low, "ci_high": high})
    out["rank"] = out["strength"].rank(ascending=False, method="min").astype(int)
    return out.sort_values("rank").reset_index(drop=True)
