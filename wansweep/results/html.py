"""A self-contained HTML report: tables, plots and a contact sheet, with every image inline.

Opens with no network: plots are PNGs (matplotlib, Agg) and frames are JPEGs, all embedded
as data URIs. Each contact-sheet cell and player links to its video in the archive by a path
relative to the report (:data:`ARCHIVE_ROOT`, from ``sweeps/<name>/report/``), so the archive
can move. It fits a laptop's window and a phone's: wide tables scroll in their own box.
"""

from __future__ import annotations

import base64
import html
import io
from concurrent.futures import ThreadPoolExecutor

import pandas as pd

from wansweep.store import Store
from wansweep.store.layout import STRIP, VIDEO, job_file

MAX_CELLS = 400  # contact-sheet cells embedded; past that the page would grow unwieldy
ARCHIVE_ROOT = "../../../"  # the archive's root, from the report's place in it

CSS = """
*{box-sizing:border-box}
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:16px;color:#1d2330;background:#fafbfc;overflow-wrap:anywhere}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #dde1e6;padding-bottom:4px}
p.meta{color:#5b6472;margin:0 0 12px}
table{border-collapse:collapse;font-size:13px;background:white}
th,td{border:1px solid #dde1e6;padding:4px 8px;text-align:right} th{background:#eef1f5}
td:first-child,th:first-child{text-align:left}
.plots{display:flex;flex-wrap:wrap;gap:12px} .plots img{border:1px solid #dde1e6;background:white;max-width:min(480px,100%);height:auto}
.sheet td{padding:4px;vertical-align:top;text-align:center} .sheet img{height:72px;display:block}
.sheet .cap{font-size:11px;color:#5b6472} .sheet td:first-child{min-width:200px;text-align:left}
.wide{overflow-x:auto;max-width:100%} .wide th,.wide td{overflow-wrap:normal} .wide th{white-space:nowrap} .fail{color:#b3261e;font-size:11px;max-width:220px}
pre{white-space:pre-wrap;max-width:100%}
table.pairs td{vertical-align:top;padding:4px} table.pairs caption{text-align:left;font-size:12px;color:#5b6472;padding:8px 0 2px}
video.paired{max-width:min(360px,44vw);max-height:min(320px,60vh);width:auto;height:auto;background:#000}
td.cap-row{text-align:left;font-size:12px;color:#5b6472;border:0;padding-top:10px}
"""


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def plots(frame: pd.DataFrame, summ: pd.DataFrame) -> list[tuple[str, str]]:
    """(title, data URI) for cost vs latency, latency distributions, and cost per arm."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = []
    done = frame[frame["status"] == "succeeded"]
    if len(summ):
        fig, ax = plt.subplots(figsize=(5.2, 3.6))
        per_job = summ["cost_usd"] / summ["succeeded"].where(summ["succeeded"] > 0)
        ax.scatter(summ["wall_p50"], per_job, s=60, color="#3465a4")
        for _, r in summ.assign(per_job=per_job).iterrows():
            ax.annotate(
                str(r["arm"]),
                (r["wall_p50"], r["per_job"]),
                fontsize=8,
                xytext=(4, 4),
                textcoords="offset points",
            )
        # from 0, with room beside the furthest point: arms of nearly equal latency are then
        # seen to be near each other, not spread over a tenth of a second
        ax.set_xlim(0, max(1.0, float(summ["wall_p50"].max() or 0)) * 1.3)
        ax.set_ylim(0, max(0.01, float(per_job.max() or 0)) * 1.3)
        ax.set_xlabel("end-to-end latency p50 (s)")
        ax.set_ylabel("cost per video (USD)")
        ax.set_title("Cost vs latency per arm")
        ax.grid(alpha=0.3)
        out.append(("Cost vs latency", _png(fig)))

        fig, ax = plt.subplots(figsize=(5.2, 3.6))
        ax.bar(summ["arm"].astype(str), summ["cost_usd"], color="#73a857")
        ax.set_ylabel("USD")
        ax.set_title("Cost per arm")
        ax.tick_params(axis="x", rotation=30, labelsize=8)
        out.append(("Cost per arm", _png(fig)))
    if len(done):
        arms = sorted(done["arm"].dropna().unique())
        fig, ax = plt.subplots(figsize=(5.2, 3.6))
        ax.boxplot(
            [done.loc[done["arm"] == a, "wall_seconds"].dropna() for a in arms], tick_labels=arms
        )
        ax.set_ylabel("seconds")
        ax.set_title("End-to-end latency per arm")
        ax.tick_params(axis="x", rotation=30, labelsize=8)
        out.append(("Latency distribution", _png(fig)))
    return out


def seed_comparison(frame: pd.DataFrame) -> pd.DataFrame:
    """For each image x prompt: arms side by side across seeds (first-frame similarity)."""
    done = frame[frame["arm"].notna()].copy()
    if not len(done):
        return pd.DataFrame()
    done["seed"] = done["seed_requested"].astype("Int64")
    return done.pivot_table(
        index="row_id", columns=["arm", "seed"], values="first_frame_similarity", aggfunc="mean"
    ).round(3)


def render_html(
    store: Store,
    sweep: str,
    frame: pd.DataFrame,
    summ: pd.DataFrame,
    markdown: str,
    ab: pd.DataFrame | None = None,
) -> str:
    planned = frame[frame["arm"].notna()].sort_values(["row_id", "arm", "seed_requested"])
    cells = planned.head(MAX_CELLS)
    keys = [k for k, s in zip(cells["job_key"], cells["status"]) if s == "succeeded"]
    with ThreadPoolExecutor(16) as pool:
        strips = dict(zip(keys, pool.map(lambda k: store.get_bytes(job_file(k, STRIP)), keys)))

    arms = sorted(planned["arm"].unique())
    seeds = sorted(planned["seed_requested"].dropna().unique())
    rows_html = []
    for row_id, group in cells.groupby("row_id", sort=True):
        prompt = html.escape(str(group["prompt"].iloc[0])[:90])
        tds = [f"<td><b>{html.escape(str(row_id))}</b><div class='cap'>{prompt}</div></td>"]
        for arm in arms:
            for seed in seeds or [None]:
                match = group[
                    (group["arm"] == arm)
                    & (
                        (group["seed_requested"] == seed)
                        if seed is not None
                        else group["seed_requested"].isna()
                    )
                ]
                tds.append(_cell(match, strips))
        rows_html.append("<tr>" + "".join(tds) + "</tr>")
    head = (
        "<tr><th>image / prompt</th>"
        + "".join(
            f"<th>{html.escape(str(a))}<br><span class='cap'>seed {int(s) if s is not None else 'random'}</span></th>"
            for a in arms
            for s in (seeds or [None])
        )
        + "</tr>"
    )
    more = (
        f"<p class='meta'>Showing the first {MAX_CELLS} of {len(planned)} jobs (every job is in "
        "jobs.csv).</p>"
        if len(planned) > MAX_CELLS
        else ""
    )

    counts = frame["status"].value_counts().to_dict()
    headline = ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
    plot_html = "".join(
        f"<img alt='{html.escape(t)}' src='{uri}'>" for t, uri in plots(frame, summ)
    )
    seeds_table = seed_comparison(frame)
    return f"""<!doctype html><html><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>wansweep: {html.escape(sweep)}</title>
<style>{CSS}</style></head><body>
<h1>Sweep <code>{html.escape(sweep)}</code></h1>
<p class="meta">{len(frame)} jobs: {headline}. Cost ${frame["cost_usd"].sum():.2f} of ${frame["estimated_usd"].sum():.2f}
estimated. Archive: {html.escape(store.uri)}</p>
<h2>Summary by arm</h2><div class="wide">{summ.to_html(index=False, float_format=lambda v: f"{v:.3g}", na_rep="")}</div>
<h2>Plots</h2><div class="plots">{plot_html}</div>
<h2>Contact sheet (first, middle, last frame)</h2>{more}<div class="wide"><table class="sheet">{head}{"".join(rows_html)}</table></div>
<h2>Which arm is better (paired: same image, prompt and seed)</h2>{_ab_html(ab)}
<h2>Pairs side by side</h2>{_players(store, frame)}
<h2>Stability across seeds (per arm: mean SD across seeds of the same input)</h2>{_spread_html(frame)}
<h2>Seed comparison: first-frame similarity to the input image</h2>
{f'<div class="wide">{seeds_table.to_html(na_rep="")}</div>' if len(seeds_table) else "<p>(no archived jobs)</p>"}
<h2>Markdown summary</h2><pre>{html.escape(markdown)}</pre>
</body></html>"""


MAX_PAIRS = 8


def _video_src(job_key: str) -> str:
    """Where the page finds a video: its path relative to the report's place in the archive
    (the archive may move; no credentials ever go into a report)."""
    return html.escape(ARCHIVE_ROOT + job_file(job_key, VIDEO))


def _players(store: Store, frame: pd.DataFrame) -> str:
    """The first pairs as two players side by side; playing one plays both, in step."""
    from wansweep.results.review import review_pairs

    pairs = review_pairs(frame)
    if not pairs:
        return "<p>(no pairs yet)</p>"
    rows = []
    for pair in pairs[:MAX_PAIRS]:
        seed = f", seed {pair.seed}" if pair.seed is not None else ""
        about = html.escape(f"row {pair.row_id}{seed}: {(pair.prompt or '')[:160]}")
        cells = "".join(
            f"<td><div class='cap'>{html.escape(arm)}</div><video class='paired' controls muted "
            f"loop preload='metadata' src='{_video_src(key)}'></video></td>"
            for key, arm in zip(pair.jobs, pair.arms)
        )
        rows.append(
            f"<tbody><tr><td class='cap-row' colspan='2'>{about}</td></tr><tr>{cells}</tr></tbody>"
        )
    shown = f"the first {MAX_PAIRS} of " if len(pairs) > MAX_PAIRS else ""
    more = (
        f"<p class='meta'>Showing {shown}{len(pairs)} pairs; <code>wansweep review</code> "
        "shows them all, blind.</p>"
    )
    sync = (
        "<script>for (const row of document.querySelectorAll('table.pairs tr')) {"
        "const vs = row.querySelectorAll('video');"
        "vs.forEach(v => { v.onplay = () => vs.forEach(o => { if (o !== v) { o.currentTime = v.currentTime; o.play(); } });"
        "v.onpause = () => vs.forEach(o => o.pause()); }); }</script>"
    )
    return f"{more}<div class='wide'><table class='pairs'>{''.join(rows)}</table></div>{sync}"


def _spread_html(frame: pd.DataFrame) -> str:
    from wansweep.results.stats import seed_spread

    spread = seed_spread(frame)
    if spread.empty:
        return "<p>(no input was run with more than one seed)</p>"
    table = spread.pivot(index="measure", columns="arm", values="seed_sd")
    return (
        "<div class='wide'>"
        + table.to_html(float_format=lambda v: f"{v:.3g}", na_rep="")
        + "</div>"
    )


def _ab_html(ab: pd.DataFrame | None) -> str:
    if ab is None or ab.empty:
        return "<p>(no pairs yet)</p>"
    shown = ab[ab["better"] != ""].drop(columns=["more_usd"])
    return (
        "<p class='meta'>diff = B - A, mean over pairs, with a 95% interval that resamples "
        "whole images (their seeds are not independent); p: the chance of so large a "
        "difference with none. The primary measure is judged alone at 5%; the others with "
        "Holm's correction (p_adjusted), so any false verdict among them stays at 5% "
        "(error_rate says which). b_wins: share of pairs B wins (ties half); pairs_needed: "
        "pairs to resolve the observed difference (t test, alpha 0.05, power 0.8). All rows in "
        "ab.csv.</p><div class='wide'>"
        + shown.to_html(index=False, float_format=lambda v: f"{v:.3g}", na_rep="")
        + "</div>"
    )


def _cell(match: pd.DataFrame, strips: dict[str, bytes | None]) -> str:
    if not len(match):
        return "<td></td>"
    r = match.iloc[0]
    if r["status"] != "succeeded" or not strips.get(r["job_key"]):
        return f"<td><div class='fail'>{html.escape(str(r['status']))}: {html.escape(str(r.get('error') or ''))[:160]}</div></td>"
    uri = "data:image/jpeg;base64," + base64.b64encode(strips[r["job_key"]]).decode()
    if pd.notna(r.get("seed")):
        seed = f"seed {r['seed']:.0f}"
    else:  # an endpoint that takes no seed: its seeds are replicates
        seed = f"replicate {r['seed_requested']:.0f}" if pd.notna(r.get("seed_requested")) else ""
    sim = r.get("first_frame_similarity")
    parts = [seed, f"{r['wall_seconds']:.1f}s", f"sim {sim:.2f}" if pd.notna(sim) else ""]
    cap = " · ".join(p for p in parts if p)
    return (
        f"<td><a href='{_video_src(r['job_key'])}'><img src='{uri}' alt='frames'></a>"
        f"<div class='cap'>{cap}</div></td>"
    )
