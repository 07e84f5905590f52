"""Manifests (CSV, Parquet, JSONL; local or s3://) and the plan: every job, validated, priced.

Nothing here talks to fal: a plan with errors never reaches a submit.
"""

from __future__ import annotations

import hashlib
import io
import math
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import pandas as pd

from wansweep import schema
from wansweep.pricing import PriceTable
from wansweep.store import read_uri
from wansweep.sweep import Job, SweepSpec, job_key, normalise_settings

KNOWN_COLUMNS = {
    "id",
    "image",
    "prompt",
    "negative_prompt",
    "audio",
    "seed",
} | schema.SETTING_FIELDS
COLUMN_ALIASES = {"image_url": "image", "image_path": "image", "audio_url": "audio"}


class ManifestError(ValueError):
    """The manifest as a whole cannot be read (missing file, wrong format, no columns)."""


@dataclass(frozen=True)
class RowProblem:
    row: int  # 1-based data row (the header is not counted)
    id: str
    field: str
    rule: str
    value: str
    msg: str
    severity: str = "error"

    def __str__(self) -> str:
        return f"row {self.row} (id {self.id}): {self.field}: {self.msg} [{self.rule}; value {self.value}]"


@dataclass
class Plan:
    jobs: list[Job]
    problems: list[RowProblem] = field(default_factory=list)
    skipped: list[RowProblem] = field(default_factory=list)  # rows left out by --skip-invalid
    rows: int = 0

    @property
    def errors(self) -> list[RowProblem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[RowProblem]:
        return [p for p in self.problems if p.severity == "warning"]

    @property
    def estimated_usd(self) -> float:
        return round(sum(j.estimated_usd for j in self.jobs), 6)


def read_manifest(uri: str) -> pd.DataFrame:
    """Read a manifest into a frame of strings (empty cells are empty strings)."""
    suffix = PurePosixPath(uri.split("?")[0]).suffix.lower()
    try:
        data = read_uri(uri)
    except FileNotFoundError as exc:
        raise ManifestError(f"manifest {uri} not found ({exc})") from None
    try:
        if suffix == ".csv":
            df = pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False)
        elif suffix in (".parquet", ".pq"):
            df = pd.read_parquet(io.BytesIO(data))
        elif suffix in (".jsonl", ".ndjson"):
            df = pd.read_json(io.BytesIO(data), lines=True, dtype=False)
        else:
            raise ManifestError(
                f"manifest {uri}: unknown format {suffix!r}; use .csv, .parquet or .jsonl"
            )
    except ManifestError:
        raise
    except Exception as exc:
        raise ManifestError(f"manifest {uri} could not be read as {suffix}: {exc}") from None
    df = df.rename(columns={c: COLUMN_ALIASES.get(c.strip(), c.strip()) for c in df.columns})
    missing = {"image", "prompt"} - set(df.columns)
    if missing:
        raise ManifestError(
            f"manifest {uri} lacks column(s) {sorted(missing)}; it has {list(df.columns)}"
        )
    return df


def _cell(value: Any) -> Any:
    """Parquet/JSONL cells may be NaN/None; treat them as empty."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return value


@dataclass
class _Media:
    uri: str
    sha256: str | None
    problems: list[schema.Problem]


class MediaCache:
    """Each distinct image or audio reference is read and checked once per plan."""

    def __init__(self) -> None:
        self._seen: dict[tuple[str, str], _Media] = {}

    def get(self, ref: str, kind: str, base: str) -> _Media:
        key = (ref, kind)
        if key not in self._seen:
            self._seen[key] = self._load(resolve_ref(ref, base), kind)
        return self._seen[key]

    def _load(self, uri: str, kind: str) -> _Media:
        field = "image" if kind == "image" else "audio"
        try:
            data = load_media(uri)
        except FileNotFoundError as exc:
            return _Media(
                uri, None, [schema.Problem(field, "file_missing", f"file not found: {exc}")]
            )
        except Exception as exc:
            return _Media(
                uri, None, [schema.Problem(field, "file_unreadable", f"could not read it: {exc}")]
            )
        if kind == "image":
            _, problems = schema.check_image(data, field)
        else:
            problems = schema.check_audio(data, field)
        return _Media(uri, hashlib.sha256(data).hexdigest(), problems)


def resolve_ref(ref: str, base: str) -> str:
    """Paths relative to the manifest resolve against it (locally or within its bucket)."""
    if ref.startswith(("data:", "http://", "https://", "s3://", "/")):
        return ref
    ref = ref.removeprefix("file://")
    if base.startswith("s3://"):
        return str(PurePosixPath(base).parent / ref).replace("s3:/", "s3://", 1)
    return str((Path(base).parent / ref).resolve())


def load_media(uri: str) -> bytes:
    if uri.startswith("data:"):
        from wansweep.media import decode_data_uri

        return decode_data_uri(uri)
    if uri.startswith(("http://", "https://")):
        import httpx

        response = httpx.get(uri, timeout=30, follow_redirects=True)
        if response.status_code == 404:
            raise FileNotFoundError(uri)
        response.raise_for_status()
        return response.content
    return read_uri(uri)


def plan(
    spec: SweepSpec, manifest_uri: str, prices: PriceTable | None = None, skip_invalid: bool = False
) -> Plan:
    """Validate every row and expand rows x arms x seeds into priced jobs."""
    prices = prices or PriceTable.load()
    df = read_manifest(manifest_uri)
    arms = spec.expand_arms()
    seeds = spec.seed_list()
    media = MediaCache()
    problems: list[RowProblem] = []
    jobs: list[Job] = []
    extra_cols = [c for c in df.columns if c not in KNOWN_COLUMNS]
    setting_cols = [c for c in df.columns if c in schema.SETTING_FIELDS]
    seen_ids: dict[str, int] = {}
    bad_rows: set[int] = set()

    for idx, rec in enumerate(df.to_dict("records"), start=1):
        rec = {k: _cell(v) for k, v in rec.items()}
        prompt = str(rec["prompt"])
        image_ref = str(rec["image"]).strip()
        row_id = str(rec.get("id") or "").strip() or f"row{idx}"

        def report(p: schema.Problem, value: Any, idx: int = idx, row_id: str = row_id) -> None:
            text = str(value)
            if len(text) > 60:
                text = text[:57] + "..."
            problems.append(RowProblem(idx, row_id, p.field, p.rule, repr(text), p.msg, p.severity))
            if p.severity == "error":
                bad_rows.add(idx)

        if row_id in seen_ids:
            report(
                schema.Problem("id", "duplicate_id", f"id also used by row {seen_ids[row_id]}"),
                row_id,
            )
        seen_ids.setdefault(row_id, idx)
        if not image_ref:
            report(schema.Problem("image", "missing", "no image given"), image_ref)
            continue
        image = media.get(image_ref, "image", manifest_uri)
        for p in image.problems:
            report(p, image_ref)
        audio = None
        audio_ref = str(rec.get("audio") or "").strip()
        if audio_ref:
            audio = media.get(audio_ref, "audio", manifest_uri)
            for p in audio.problems:
                report(p, audio_ref)

        overrides = normalise_settings({c: rec[c] for c in setting_cols if rec[c] != ""})
        if rec.get("negative_prompt"):
            overrides["negative_prompt"] = str(rec["negative_prompt"])
        row_seed = rec.get("seed", "")
        row_seeds: list[int | None] = seeds
        if row_seed != "":
            try:
                row_seeds = [int(float(row_seed))]
            except ValueError:
                report(schema.Problem("seed", "int_type", "seed must be a whole number"), row_seed)
                continue

        checked_settings: set[str] = set()
        for arm in arms:
            settings = {**arm.settings, **overrides}
            fields = {"prompt": prompt, **settings}
            signature = repr(sorted(fields.items()))
            if signature not in checked_settings:
                checked_settings.add(signature)
                for p in schema.check_input({**fields, "image_url": "x"}):
                    report(p, fields.get(p.field, ""))
            if idx in bad_rows:
                continue
            for seed in row_seeds:
                jobs.append(
                    Job(
                        job_key="",
                        arm=arm.name,
                        endpoint=arm.endpoint,
                        row_index=idx,
                        row_id=row_id,
                        prompt=prompt,
                        settings=settings,
                        seed=seed,
                        image_uri=image.uri,
                        image_sha256=image.sha256 or "",
                        audio_uri=audio.uri if audio else None,
                        audio_sha256=audio.sha256 if audio else None,
                        estimated_usd=prices.estimate(
                            arm.endpoint, settings["resolution"], settings["duration"]
                        ),
                        extra={c: rec[c] for c in extra_cols},
                    )
                )
                job = jobs[-1]
                job.job_key = job_key(
                    job.endpoint, job.request_fields(), job.image_sha256, job.audio_sha256
                )

    result = Plan(
        jobs=[j for j in jobs if j.row_index not in bad_rows], problems=problems, rows=len(df)
    )
    if skip_invalid:
        result.skipped = [p for p in problems if p.severity == "error"]
    # The same job twice (e.g. two rows with identical image bytes and prompt) is paid once.
    unique: dict[str, Job] = {}
    for job in result.jobs:
        unique.setdefault(job.job_key, job)
    result.jobs = list(unique.values())
    return result
