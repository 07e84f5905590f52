"""Which arm is better, and is the difference real: paired statistics over a sweep's jobs.

Jobs of two arms that share an image, a prompt and a requested seed are a *pair*: the same
question asked of both arms, so their difference is the arms' difference and not the
inputs'. For each pair of arms and each measure (cost, latency, every quality metric):

- ``diff``: mean of (B - A) over pairs, with a 95% interval that resamples whole *images*
  (a clustered bootstrap-t): pairs of one image (its seeds, its prompts) are not independent,
  and images usually differ more than seeds do. Chosen by measurement (bench/README.md,
  tests/unit/test_stats_coverage.py): at 5-20 images of 3 seeds it covers the true
  difference 93-96% of the time, skewed data included, where the pair-level percentile
  bootstrap used before covered 59-73% and a clustered BCa 76-93%. From ``NORMAL_FROM``
  images on, the normal interval with the cluster-robust standard error, which it converges
  to. ``p``: the two-sided chance of so large a difference with none, from the same draws.
- ``verdict``: which arm is better, or ``unclear``. The sweep's *primary* measure (the spec's
  ``primary_measure``) is judged alone, at 5%; every other measure with a direction is
  *secondary*, judged with Holm's correction across them, so the chance of any false
  verdict among them stays at 5% however many are measured. ``error_rate`` says which.
  Measures without a direction are described, never judged.
- ``b_wins``: share of pairs where B is better (ties count half), for directed measures;
- ``pairs_needed``: about how many pairs (at this sweep's pairs per image) a paired t test
  (alpha 0.05, power 0.8) needs to tell a difference of ``resolve`` (default: the observed
  one) from none, from the spread between images; and what the extra pairs would cost.

:func:`seed_spread` says how much each arm varies across seeds for the same input.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import combinations
from statistics import NormalDist

import numpy as np
import pandas as pd

from wansweep.media.quality import compared_measures

PAIR_KEY = ["image_sha256", "prompt", "seed_requested"]
CLUSTER = "image_sha256"  # what is resampled whole: the pairs of one input image
ALPHA = 0.05
RESAMPLES = 2000
NORMAL_FROM = 1000  # images; the bootstrap-t is the normal interval well before this
_NORMAL = NormalDist()


def measures(frame: pd.DataFrame) -> dict[str, str | None]:
    """Measure column -> better direction, for the columns this frame has."""
    return {c: d for c, d in compared_measures().items() if c in frame.columns}


def paired(frame: pd.DataFrame, a: str, b: str, column: str) -> pd.DataFrame:
    """Pairs of arms ``a`` and ``b`` with a value of ``column`` on both sides: columns
    ``a``, ``b`` and ``cluster`` (the pair's image)."""
    done = frame[(frame["status"] == "succeeded") & frame[column].notna()]
    key = pd.Series("", index=done.index)
    for column_name in PAIR_KEY:
        key = key + "|" + done[column_name].astype(str)
    sides = [
        done[done["arm"] == arm].assign(_key=key).drop_duplicates("_key").set_index("_key")[column]
        for arm in (a, b)
    ]
    both = pd.concat(sides, axis=1, keys=["a", "b"], join="inner").astype(float)
    image = done.assign(_key=key).drop_duplicates("_key").set_index("_key")[CLUSTER]
    return both.assign(cluster=image.reindex(both.index).astype(str).to_numpy())


@dataclass(frozen=True)
class Interval:
    low: float
    high: float
    p: float  # two-sided: no difference at all, judged by the same draws
    images: int


def clustered_interval(
    diffs: np.ndarray,
    clusters: np.ndarray,
    resamples: int = RESAMPLES,
    seed: int = 0,
    alpha: float = ALPHA,
) -> Interval:
    """The (1 - alpha) interval of the mean of ``diffs``, resampling whole clusters: a
    bootstrap-t on the cluster-robust standard error (see the module docstring). Fewer than
    two clusters give no interval (NaN): one image says nothing beyond itself."""
    _, index = np.unique(np.asarray(clusters), return_inverse=True)
    sums = np.bincount(index, weights=diffs)
    counts = np.bincount(index).astype(float)
    k = len(sums)
    theta = float(sums.sum() / counts.sum())
    if k < 2:
        return Interval(math.nan, math.nan, math.nan, k)
    se = _cluster_se(sums[None, :], counts[None, :], np.array([theta]))[0]
    if se == 0:  # every image differs by the same amount: no doubt about it
        return Interval(theta, theta, 0.0 if theta else 1.0, k)
    if k >= NORMAL_FROM:
        z = _NORMAL.inv_cdf(1 - alpha / 2)
        p = 2 * (1 - _NORMAL.cdf(abs(theta / se)))
        return Interval(theta - z * se, theta + z * se, p, k)
    draw = np.random.default_rng(seed).integers(0, k, (resamples, k))
    s, c = sums[draw], counts[draw]
    means = s.sum(axis=1) / c.sum(axis=1)
    ses = _cluster_se(s, c, means)
    ok = ses > 0
    t = (means[ok] - theta) / ses[ok]
    if len(t) < resamples // 2:  # nearly every draw degenerate: too few images to resample
        return Interval(math.nan, math.nan, math.nan, k)
    upper, lower = np.quantile(t, [1 - alpha / 2, alpha / 2])
    observed = theta / se  # where "no difference" falls among the draws
    tail = min(np.sum(t >= observed), np.sum(t <= observed))
    p = min(1.0, 2 * (tail + 1) / (len(t) + 1))
    return Interval(theta - upper * se, theta - lower * se, p, k)


def _cluster_se(sums: np.ndarray, counts: np.ndarray, means: np.ndarray) -> np.ndarray:
    """Cluster-robust standard error of the mean, per row of clusters."""
    k = sums.shape[1]
    resid = sums - counts * means[:, None]
    return np.sqrt(k / (k - 1) * (resid**2).sum(axis=1)) / counts.sum(axis=1)


def holm(p: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error rate; NaN stays NaN)."""
    order = sorted((v, i) for i, v in enumerate(p) if not math.isnan(v))
    out = [math.nan] * len(p)
    running = 0.0
    for rank, (value, i) in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * value))
        out[i] = running
    return out


def pairs_needed(
    sd: float, delta: float, alpha: float = ALPHA, power: float = 0.8, per_image: float = 1.0
) -> int | None:
    """Pairs a paired two-sided t test needs to detect a mean difference ``delta``, where
    ``sd`` is the spread of the per-image mean differences and each image gives
    ``per_image`` pairs (the t quantiles, not the normal ones: small samples need more)."""
    if not delta or not np.isfinite(sd) or not np.isfinite(delta) or sd == 0:
        return None
    from scipy.stats import t as student

    n = 2
    for _ in range(100):  # n appears on both sides: iterate to the fixed point
        q = student.ppf(1 - alpha / 2, n - 1) + student.ppf(power, n - 1)
        wanted = max(2, math.ceil((q * sd / abs(delta)) ** 2))
        if wanted == n:
            break
        n = wanted
    return math.ceil(n * per_image)


def compare(
    frame: pd.DataFrame,
    resolve: dict[str, float] | None = None,
    seed: int = 0,
    primary: str | None = None,
) -> pd.DataFrame:
    """One row per (arm A, arm B, measure); see the module docstring for the columns.
    ``resolve``: measure -> the difference worth resolving (default: the observed one);
    ``primary``: the measure judged alone (the others are judged with Holm's correction)."""
    arms = sorted(a for a in frame["arm"].dropna().unique())
    price = frame.groupby("arm")["estimated_usd"].mean() if "estimated_usd" in frame else None
    rows = []
    for a, b in combinations(arms, 2):
        found = []
        for column, better in measures(frame).items():
            both = paired(frame, a, b, column)
            if both.empty:
                continue
            found.append(_row(a, b, column, better, both, resolve, price, seed))
        _judge(found, primary, a, b)
        rows += found
    return pd.DataFrame(rows)


def _row(a, b, column, better, both, resolve, price, seed) -> dict:
    diffs = (both["b"] - both["a"]).to_numpy()
    ci = clustered_interval(diffs, both["cluster"].to_numpy(), seed=seed)
    mean = float(diffs.mean())
    per_image = pd.Series(diffs).groupby(both["cluster"].to_numpy()).mean()
    sd = float(per_image.std(ddof=1)) if len(per_image) > 1 else math.nan
    needed = pairs_needed(
        sd, (resolve or {}).get(column, mean), per_image=len(diffs) / max(1, ci.images)
    )
    more = max(0, needed - len(diffs)) if needed else None
    return {
        "arm_a": a,
        "arm_b": b,
        "measure": column,
        "better": better or "",
        "pairs": len(diffs),
        "images": ci.images,
        "mean_a": float(both["a"].mean()),
        "mean_b": float(both["b"].mean()),
        "diff": mean,
        "ci_low": ci.low,
        "ci_high": ci.high,
        "p": ci.p,
        "b_wins": _wins(both, better),
        "pairs_needed": needed,
        "more_pairs": more,
        "more_usd": round(more * float(price[a] + price[b]), 2)
        if more is not None and price is not None
        else None,
    }


def _judge(rows: list[dict], primary: str | None, a: str, b: str) -> None:
    """Each row's role, adjusted p, verdict and the error rate it carries."""
    secondary = [r for r in rows if r["better"] and r["measure"] != primary]
    for r, adjusted in zip(secondary, holm([r["p"] for r in secondary])):
        r.update(
            role="secondary",
            p_adjusted=adjusted,
            error_rate=f"5% family-wise over {len(secondary)} measures (Holm)",
        )
    for r in rows:
        if r["measure"] == primary and r["better"]:
            r.update(role="primary", p_adjusted=r["p"], error_rate="5% (the primary measure)")
        elif not r["better"]:
            r.update(role="described", p_adjusted=math.nan, error_rate="")
        decided = not math.isnan(r["p_adjusted"]) and r["p_adjusted"] < ALPHA
        r["verdict"] = _verdict(r["better"], r["diff"], a, b) if decided else "unclear"


def _verdict(better: str | None, diff: float, a: str, b: str) -> str:
    if not better:
        return "unclear"
    return b if (diff > 0) == (better == "higher") else a


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
