"""The report's text for people: CSV cells safe to open in a spreadsheet, and the Markdown
summary a pull request or a chat channel shows (spend, the A/B verdicts, the blind votes)."""

from __future__ import annotations

from typing import Any

import pandas as pd

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def safe_csv(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy whose text cells cannot run as spreadsheet formulas (OWASP's advice for CSV
    injection: a leading ', so =HYPERLINK(...) is shown, not run). Numbers are untouched."""
    out = frame.copy()
    for column in out.columns:
        if out[column].dtype == object or str(out[column].dtype).startswith("str"):
            out[column] = out[column].map(
                lambda v: "'" + v if isinstance(v, str) and v.startswith(FORMULA_START) else v
            )
    if isinstance(out.columns, pd.Index):
        out.columns = [
            "'" + c if isinstance(c, str) and c.startswith(FORMULA_START) else c
            for c in out.columns
        ]
    return out


def markdown_summary(sweep: str, frame: pd.DataFrame, summ: pd.DataFrame) -> str:
    counts = frame["status"].value_counts().to_dict()
    cols = [
        "arm",
        "model",
        "price_unit",
        "jobs",
        "succeeded",
        "failed",
        "video_seconds",
        "cost_usd",
        "wall_p50",
        "wall_p90",
        "first_frame_similarity",
    ]
    cols = [c for c in cols if c in summ.columns]
    table = _md_table(summ[cols]) if len(summ) else "(no jobs)"
    billed = frame["cost_usd"] > 0
    from_fal = int((billed & (frame.get("cost_source") == "fal")).sum())
    source = (
        f"{from_fal} of {int(billed.sum())} billed jobs priced from fal's billing units "
        "(X-Fal-Billable-Units times its pricing API's unit price), the rest from the "
        "estimates of each endpoint's profile (configs/endpoints). "
    )
    return (
        f"## Sweep `{sweep}`\n\n"
        f"{len(frame)} jobs: "
        + ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
        + f".\n\nSpend: **${frame['cost_usd'].sum():.2f} billed** for the videos made; "
        f"likely ${frame['likely_usd'].sum():.2f} (adds what fal says it may charge: 422s after "
        f"GPU time, cancelled running requests, expired results); at most "
        f"${frame['upper_usd'].sum():.2f} (adds requests fal may hold that this archive cannot "
        f"settle yet); ${frame['estimated_usd'].sum():.2f} estimated for the whole plan. "
        + source
        + "`wansweep spend` compares with fal's usage API.\n\n"
        + _lost_note(frame)
        + _models_note(frame)
        + _versions_note(frame)
        + f"{table}\n"
    )


def _models_note(frame: pd.DataFrame) -> str:
    """Arms on more than one model: what a pair and a seed mean then."""
    models = frame["model"].dropna().unique() if "model" in frame else []
    if len(models) < 2:
        return ""
    return (
        f"Arms on {len(models)} models ({', '.join(sorted(models))}): pairs match the same "
        "image and prompt; seeds are replicates, not the same noise (a seed means something "
        "else to each model, and some take none). Prices are each model's own, per second "
        "or per video as its profile says.\n\n"
    )


def _versions_note(frame: pd.DataFrame) -> str:
    """Jobs measured under different metric definitions (an archive older than the labelled
    clip set, :data:`wansweep.media.quality.QUALITY_VERSION`)."""
    if "quality_version" not in frame:
        return ""
    versions = sorted(int(v) for v in frame["quality_version"].dropna().unique())
    if len(versions) < 2:
        return ""
    return (
        f"**Quality measured by {len(versions)} versions of the metrics** "
        f"({', '.join(map(str, versions))}): cuts, freezes and first-frame similarity are "
        "defined differently across them, so quality verdicts between arms measured under "
        "different versions are not like for like (the `quality_version` column says which).\n\n"
    )


def _lost_note(frame: pd.DataFrame) -> str:
    """Jobs whose sidecar stands without its video, named (a few) with what to do."""
    lost = frame.loc[frame["status"] == "video_lost", "job_key"].tolist()
    if not lost:
        return ""
    named = ", ".join(f"`{k}`" for k in lost[:5]) + (
        f" and {len(lost) - 5} more" if len(lost) > 5 else ""
    )
    return (
        f"**{len(lost)} video(s) lost by the archive** (their sidecars stand): {named}. Run "
        "the sweep again to fetch them from fal (no new payment while fal holds them); "
        "`wansweep verify` checks every video.\n\n"
    )


def ab_markdown(ab: pd.DataFrame) -> str:
    """Per pair of arms: the primary verdict first, then the measures with a direction, the
    paired difference (B - A) and its 95% interval, the verdict and the error rate it carries,
    and how many pairs would settle what is unclear."""
    if ab.empty:
        return "\n### Which arm is better\n\nNo pairs yet (jobs of two arms with the same image, prompt and seed).\n"
    out = [
        "\n### Which arm is better (paired: same image, prompt and seed)\n",
        "Intervals resample whole images (an image's seeds are not independent). The primary "
        "measure is judged alone at 5%; the others with Holm's correction, so the chance of "
        "any false verdict among them stays at 5%.\n",
    ]
    for (a, b), group in ab.groupby(["arm_a", "arm_b"], sort=False):
        directed = group[group["better"] != ""]
        shown = directed.assign(
            ci=[f"[{lo:.3g}, {hi:.3g}]" for lo, hi in zip(directed["ci_low"], directed["ci_high"])]
        )[
            [
                "measure",
                "role",
                "better",
                "pairs",
                "images",
                "diff",
                "ci",
                "p_adjusted",
                "verdict",
                "error_rate",
                "b_wins",
                "pairs_needed",
            ]
        ]
        primary = directed[directed["role"] == "primary"]
        head = (
            f"Primary, {primary['measure'].iloc[0]}: **{primary['verdict'].iloc[0]}** "
            "(error rate 5%). "
            if len(primary)
            else "No primary measure (the spec's `primary_measure`). "
        )
        clear = directed[(directed["verdict"] != "unclear") & (directed["role"] == "secondary")]
        said = "; ".join(f"{m}: {v}" for m, v in zip(clear["measure"], clear["verdict"]))
        out.append(
            f"**{a}** vs **{b}** ({int(group['pairs'].max())} pairs on "
            f"{int(group['images'].max())} images). {head}Secondary, better after Holm's "
            f"correction: {said or 'nothing yet'}.\n\n{_md_table(shown)}\n"
        )
    return "\n".join(out)


def votes_markdown(voted: pd.DataFrame, ranking: pd.DataFrame) -> str:
    """The blind review's answer: win rates with Wilson intervals, and a Bradley-Terry
    ranking when more than two arms were compared."""
    if voted.empty:
        return "\n### Blind review\n\nNo votes yet (`wansweep review STORE --sweep NAME`).\n"
    out = [
        "\n### Blind review (`wansweep review`)\n",
        "B's win rate per pair of arms (ties count half) with a Wilson 95% interval; the "
        "verdict names an arm only where the interval excludes 50%.\n",
        _md_table(voted),
    ]
    if len(ranking) > 2:
        out += [
            "\nBradley-Terry ranking (strengths sum to 1; bootstrap 95% interval):\n",
            _md_table(ranking),
        ]
    return "\n".join(out) + "\n"


def _md_table(frame: pd.DataFrame) -> str:
    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return "" if pd.isna(v) else f"{v:.3g}"
        return str(v)

    head = "| " + " | ".join(frame.columns) + " |"
    rule = "|" + "---|" * len(frame.columns)
    body = ["| " + " | ".join(fmt(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([head, rule, *body])
