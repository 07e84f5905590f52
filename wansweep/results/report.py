"""The sweep report, built from the archive alone: plan + sidecars + ledger -> pandas."""

from __future__ import annotations

import hashlib
import io
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from wansweep import __version__
from wansweep.errors import LedgerDamaged
from wansweep.plan.pricing import FalPrices, load_prices
from wansweep.results import stats as abstats
from wansweep.results.index import (
    get_parquet,
    index_frame,
    read_sidecars,
    sidecar_row,
    write_index,
)
from wansweep.results.markdown import ab_markdown, markdown_summary, safe_csv, votes_markdown
from wansweep.run.ledger import Ledger
from wansweep.run.lifecycle import Billing, billing
from wansweep.store import Store
from wansweep.store.layout import (
    ANALYSIS_FILE,
    INDEX_KEY,
    JOBS,
    PLAN_FILE,
    SIDECAR,
    SKIPPED_FILE,
    SWEEP_INDEX,
    VIDEO,
    job_file,
    list_jobs,
    report_file,
    sweep_file,
    sweep_names,
    vote_keys,
)

sweeps = sweep_names  # the report's name for it


def load_sweep(store: Store, sweep: str) -> tuple[pd.DataFrame, pd.DataFrame, set[str]]:
    """A sweep's plan, the index rows (:func:`index_row`) of its jobs archived whole, and the
    keys of its jobs whose sidecar stands without its video (the archive lost it).

    Only sidecars one listing shows are read, 16 at a time, and turned into rows a few
    thousand at a time; the sidecars themselves are not kept (8 KB each as dicts: 800 MB at
    100,000 jobs)."""
    plan = get_parquet(store, sweep_file(sweep, PLAN_FILE))
    if plan is None:
        raise FileNotFoundError(f"{store.url(sweep_file(sweep))} holds no sweep plan")
    listing = list_jobs(store)
    whole = listing.archived
    keys = [k for k in plan["job_key"] if k in whole]
    lost = {k for k in plan["job_key"] if k in listing.lost}
    chunks = []
    with ThreadPoolExecutor(16) as pool:
        for start in range(0, len(keys), 5000):
            metas = pool.map(
                lambda k: store.get_json(job_file(k, SIDECAR)), keys[start : start + 5000]
            )
            chunks.append(index_frame(store, [m for m in metas if m]))
    if len(chunks) < 2:
        return plan, chunks[0] if chunks else index_frame(store, []), lost
    # a column all None in one chunk and numbers in another: numbers, as one frame would be
    return plan, pd.concat(chunks, ignore_index=True).infer_objects(), lost


LOST = "video_lost"  # a report status: archived once, the video since lost by the archive
LOST_ERROR = (
    "the archive lost this job's video (its sidecar stands); run the sweep again to fetch "
    "it from fal (`wansweep verify` checks every video)"
)


def jobs_frame(store: Store, sweep: str, loaded: tuple | None = None) -> pd.DataFrame:
    """One row per planned job: its settings, what the archive holds, and its status."""
    plan, archived, lost = loaded or load_sweep(store, sweep)
    keys = list(plan["job_key"])
    done = set(archived["job_key"])
    frame = plan.merge(archived[list(sidecar_row({"job_key": ""}))], on="job_key", how="left")
    missing = [k for k in keys if k not in done and k not in lost]
    with ThreadPoolExecutor(16) as pool:
        entries = dict(zip(missing, pool.map(_ledger_state(store), missing)))
    entries |= {k: (LOST, LOST_ERROR, None, None) for k in lost}
    frame["status"] = ["succeeded" if k in done else entries[k][0] for k in keys]
    frame["error"] = [None if k in done else entries[k][1] for k in keys]
    frame["error_kind"] = [None if k in done else entries[k][2] for k in keys]
    frame["archive_uri"] = [store.url(job_file(k, VIDEO)) if k in done else None for k in keys]
    ran = [None if k in done else entries[k][3] for k in keys]
    frame["billing"] = [
        str(billing(s, k, r)) for s, k, r in zip(frame["status"], frame["error_kind"], ran)
    ]
    # a job's price: fal's billing units times fal's unit price (read by the run that made
    # it), where fal sent units; else the estimate of the price table
    billed = billed_usd(frame, load_prices(store))
    frame["billed_usd"] = billed
    frame["cost_source"] = ["fal" if pd.notna(b) else "estimate" for b in billed]
    price = billed.where(billed.notna(), frame["estimated_usd"])
    # cost: what was surely billed; likely: adds what fal says it may bill; upper: adds what
    # fal may hold unbeknown to us (the budget counts this one)
    frame["cost_usd"] = price.where(frame["billing"] == Billing.BILLED, 0.0)
    frame["likely_usd"] = price.where(frame["billing"].isin([Billing.BILLED, Billing.MAYBE]), 0.0)
    frame["upper_usd"] = price.where(frame["billing"] != Billing.NOT_BILLED, 0.0)
    frame["prompt_expanded"] = frame["actual_prompt"].notna() & (
        frame["actual_prompt"] != frame["prompt"]
    )
    skipped = get_parquet(store, sweep_file(sweep, SKIPPED_FILE))
    if skipped is not None and len(skipped):
        rows = skipped.groupby(["row_index", "row_id"])["reason"].agg("; ".join).reset_index()
        rows["status"], rows["error"], rows["arm"] = "skipped", rows.pop("reason"), None
        rows["billing"] = str(Billing.NOT_BILLED)
        for money in ("estimated_usd", "cost_usd", "likely_usd", "upper_usd"):
            rows[money] = 0.0
        frame = pd.concat([frame, rows], ignore_index=True)
    return frame


def billed_usd(frame: pd.DataFrame, prices: FalPrices | None) -> pd.Series:
    """What fal billed each job, in dollars: its billing units (``X-Fal-Billable-Units``)
    times the unit price fal's pricing API gave for the endpoint that served it; NaN where
    either is unknown. Account discounts are not known here (fal's usage API has them)."""
    if prices is None or "billable_units" not in frame:
        return pd.Series(float("nan"), index=frame.index)
    units = pd.to_numeric(frame["billable_units"], errors="coerce")
    served = frame["served_by"].where(frame["served_by"].notna(), frame["endpoint"])
    unit_price = served.map(lambda e: prices.unit_price(e) if isinstance(e, str) else None)
    return (units * pd.to_numeric(unit_price, errors="coerce")).round(6)


def _ledger_state(store: Store):
    """(status, error) of a job that is not archived, from its ledger entry."""
    ledger = Ledger(store)

    def state(job_key: str) -> tuple[str, str | None, str | None, bool | None]:
        try:
            entry = ledger.get(job_key)
        except LedgerDamaged as exc:
            return "damaged", str(exc), None, None
        if entry is None or entry.status is None:
            return "pending", None, None, None
        kind = entry.error_kind and str(entry.error_kind)
        return str(entry.status), entry.error, kind, entry.cancelled_running

    return state


def _p(q: float):
    def f(s: pd.Series) -> float:
        s = s.dropna()
        return float(s.quantile(q)) if len(s) else float("nan")

    f.__name__ = f"p{int(q * 100)}"
    return f


def summary(frame: pd.DataFrame, by: list[str] | None = None) -> pd.DataFrame:
    """Per arm (or any columns): counts, success rate, seconds of video, cost, latency
    percentiles, and how often the output matched what was asked."""
    by = by or ["arm"]
    df = frame[frame["arm"].notna()] if "arm" in by else frame
    done = df["status"] == "succeeded"
    # the short side a resolution names ("768P" too); none for an endpoint without one
    short = pd.to_numeric(df["resolution"].astype(str).str.lower().str.rstrip("p"), "coerce")
    df = df.assign(
        _ok=done,
        _failed=df["status"].isin(["failed", "expired", "cancelled"]),
        _duration_ok=(df["video_duration"] - df["duration"]).abs() < 0.5,
        _resolution_ok=(df[["width", "height"]].min(axis=1) == short).where(short.notna()),
        _expanded=df["prompt_expanded"].astype(bool),
    )
    g = df.groupby(by, dropna=False)
    archived = df[done].groupby(by, dropna=False)
    columns = {
        **{c: g[c].first() for c in ("model", "price_unit") if c in df and c not in by},
        "jobs": g.size(),
        "succeeded": g["_ok"].sum(),
        "failed": g["_failed"].sum(),
        "video_seconds": g["video_duration"].sum(min_count=1),
        "estimated_usd": g["estimated_usd"].sum(),
        "cost_usd": g["cost_usd"].sum(),
        "likely_usd": g["likely_usd"].sum(),
        "upper_usd": g["upper_usd"].sum(),
    }
    for name, col in (
        ("wall", "wall_seconds"),
        ("queue", "queue_seconds"),
        ("inference", "inference_seconds"),
    ):
        columns[f"{name}_p50"] = g[col].agg(_p(0.5))
        columns[f"{name}_p90"] = g[col].agg(_p(0.9))
        columns[f"{name}_max"] = g[col].max()
    columns["duration_as_asked"] = archived["_duration_ok"].mean()
    columns["resolution_as_asked"] = archived["_resolution_ok"].mean()
    columns["prompt_expanded"] = archived["_expanded"].mean()
    columns["first_frame_similarity"] = g["first_frame_similarity"].mean()
    out = pd.DataFrame(columns)
    out["success_rate"] = (out["succeeded"] / out["jobs"]).round(4)
    out["usd_per_video"] = (out["cost_usd"] / out["succeeded"].where(out["succeeded"] > 0)).round(4)
    out["usd_per_video_second"] = (out["cost_usd"] / out["video_seconds"]).round(4)
    return out.reset_index()


@dataclass
class ReportFiles:
    jobs_parquet: str
    jobs_csv: str
    summary_csv: str
    markdown: str
    html: str


def write_report(
    store: Store, sweep: str, out_dir: Path | None = None, by: list[str] | None = None
) -> tuple[pd.DataFrame, pd.DataFrame, ReportFiles]:
    """Write the report into the archive (sweeps/<name>/report/) and, if asked, a local folder;
    refresh the sweep's dataset index and add its jobs to the combined one. The report's
    stamp (see :func:`reuse_report`) is removed first and written last."""
    store.delete(report_file(sweep, REPORT_STAMP))  # a build cut short is never reused
    inputs = report_inputs(store, sweep)  # before reading: a vote cast meanwhile is seen next time
    planned, archived, lost = load_sweep(store, sweep)
    frame = jobs_frame(store, sweep, (planned, archived, lost))
    complete = len(archived) == len(planned)
    write_index(store, archived, sweep_file(sweep, SWEEP_INDEX))
    write_index(store, archived, INDEX_KEY, merge=True)
    del planned, archived  # the frame holds what the rest needs; 100,000 rows are ~300 MB
    summ = summary(frame, by)
    by_arm = summ if not by or by == ["arm"] else summary(frame)
    analysis = store.get_json(sweep_file(sweep, ANALYSIS_FILE)) or {}
    ab = abstats.compare(frame, primary=analysis.get("primary_measure"))
    from wansweep.results.review import read_votes

    votes = read_votes(store, sweep)
    voted, ranking = abstats.vote_table(votes), abstats.bradley_terry(votes)
    md = markdown_summary(sweep, frame, by_arm) + ab_markdown(ab) + votes_markdown(voted, ranking)
    from wansweep.results.html import render_html, seed_comparison

    def parquet() -> bytes:
        buf = io.BytesIO()
        frame.to_parquet(buf, index=False)
        return buf.getvalue()

    def csv(table: pd.DataFrame) -> bytes:
        return safe_csv(table).to_csv(index=False).encode()

    # each file is made and written before the next is made: at 100,000 jobs jobs.csv alone
    # is ~100 MB, and holding every file at once was the report's peak
    outputs = {
        "jobs.parquet": parquet,
        "jobs.csv": lambda: csv(frame),
        "summary.csv": lambda: csv(summ),
        "summary.md": md.encode,
        "seeds.csv": lambda: csv(seed_comparison(frame).reset_index()),
        "ab.csv": lambda: csv(ab),
        "seed_spread.csv": lambda: csv(abstats.seed_spread(frame)),
        "votes.csv": lambda: csv(voted),
        "ranking.csv": lambda: csv(ranking),
        "report.html": lambda: render_html(store, sweep, frame, by_arm, md, ab).encode(),
    }
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    for name, make in outputs.items():
        data = make()
        store.put_bytes(report_file(sweep, name), data)
        if out_dir is not None:
            (out_dir / name).write_bytes(_elsewhere(name, data, store, out_dir))
        del data
    store.put_json(
        report_file(sweep, REPORT_STAMP),
        {"inputs": inputs, "complete": complete, "files": list(outputs)},
    )
    return frame, summ, _files(store, sweep, out_dir)


def _elsewhere(name: str, data: bytes, store: Store, out_dir: Path) -> bytes:
    """A report file as written outside the archive: the page's links into a local archive
    made relative to where the copy is (an S3 archive's stay relative to the archive's own)."""
    import os

    from wansweep.results.html import ARCHIVE_ROOT
    from wansweep.store import LocalStore

    if name != "report.html" or not isinstance(store, LocalStore):
        return data
    root = os.path.relpath(store.root, out_dir.resolve()) + "/"
    return data.replace(f"'{ARCHIVE_ROOT}{JOBS}".encode(), f"'{root}{JOBS}".encode())


def _files(store: Store, sweep: str, out_dir: Path | None) -> ReportFiles:
    def where(name: str) -> str:
        return str(out_dir / name) if out_dir is not None else store.url(report_file(sweep, name))

    return ReportFiles(
        *map(where, ("jobs.parquet", "jobs.csv", "summary.csv", "summary.md", "report.html"))
    )


REPORT_STAMP = "stamp.json"


def report_inputs(store: Store, sweep: str) -> str:
    """One digest of what a sweep's report is built from besides its sidecars: the saved
    plan, skipped rows and primary measure, the votes, and this wansweep version (the
    report's code)."""
    digest = hashlib.sha256(__version__.encode())
    for name in (PLAN_FILE, SKIPPED_FILE, ANALYSIS_FILE):
        digest.update(hashlib.sha256(store.get_bytes(sweep_file(sweep, name)) or b"").digest())
    for key in sorted(vote_keys(store, sweep)):
        digest.update(key.encode() + b"\0")
    return digest.hexdigest()


def reuse_report(store: Store, sweep: str, out_dir: Path | None = None) -> ReportFiles | None:
    """The sweep's report as it stands, when it is current; else None (build it).

    Current means: its stamp says every planned job was archived when it was built and its
    inputs (:func:`report_inputs`) are unchanged, and its files are all there. Sidecars are
    written once and never changed, so such a report is the one a rebuild would write:
    a warm rerun of 100,000 archived jobs skips reading 100,000 sidecars. Copies the files
    to ``out_dir`` when asked."""
    stamp = store.get_json(report_file(sweep, REPORT_STAMP))
    if not (isinstance(stamp, dict) and stamp.get("complete") is True):
        return None
    names = stamp.get("files") or []
    present = {k.rsplit("/", 1)[-1] for k in store.list(report_file(sweep, ""))}
    if not names or not set(names) <= present or stamp.get("inputs") != report_inputs(store, sweep):
        return None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        for name in names:
            store.download_file(report_file(sweep, name), out_dir / name)
    return _files(store, sweep, out_dir)


def rebuild_indexes(store: Store) -> dict[str, int]:
    """`wansweep index`: every index rebuilt from the sidecars alone (one listing, one read each)."""
    rows = index_frame(store, read_sidecars(store))
    counts = {"all": write_index(store, rows, INDEX_KEY)}
    for name in sweeps(store):
        plan = get_parquet(store, sweep_file(name, PLAN_FILE))
        mine = rows[rows["job_key"].isin(set(plan["job_key"]))] if len(rows) else rows
        counts[name] = write_index(store, mine, sweep_file(name, SWEEP_INDEX))
    return counts
