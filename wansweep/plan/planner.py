"""The plan: every manifest row checked as fal would check it, expanded into its arms and
seeds, priced, one :class:`~wansweep.plan.spec.Job` each. Nothing here talks to fal: a plan
with errors never reaches a submit.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from wansweep.errors import PlanInvalid
from wansweep.media.fetch import FetchRefused
from wansweep.plan import endpoints, schema
from wansweep.plan.manifest import (
    KNOWN_COLUMNS,
    cell,
    cell_problem,
    metadata_value,
    parse_seed,
    read_manifest,
    resolve_ref,
)
from wansweep.plan.media_index import (
    Checked,
    MediaIndex,
    Validator,
    read_with_validator,
    validators,
)
from wansweep.plan.settings import normalise_settings
from wansweep.plan.spec import Job, SweepSpec
from wansweep.store import Store


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
    media_fetched: int = 0  # inputs downloaded and checked by this plan
    media_reused: int = 0  # inputs the media index proved unchanged (not downloaded)
    notes: list[str] = field(default_factory=list)  # what the spec's arms mean (not a row's)

    @property
    def errors(self) -> list[RowProblem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[RowProblem]:
        return [p for p in self.problems if p.severity == "warning"]

    @property
    def estimated_usd(self) -> float:
        return round(sum(j.estimated_usd for j in self.jobs), 6)


class MediaCache:
    """Each distinct image or audio reference is checked once per plan: fetched, fully
    decoded and hashed, concurrently (:data:`PLAN_CONCURRENCY` at once), unless the media
    index proves it unchanged since an earlier plan checked it (``trust_fresh``: also while
    an http(s) answer is fresh, without asking). ``fetched`` and ``reused`` count both cases."""

    def __init__(self, index: MediaIndex | None = None, trust_fresh: bool = False) -> None:
        self.index = index or MediaIndex(None)
        self.trust_fresh = trust_fresh
        self._seen: dict[tuple[str, str], Checked] = {}
        self.fetched = self.reused = 0

    def get(self, ref: str, kind: str, base: str) -> Checked:
        key = (ref, kind)
        if key not in self._seen:
            self.prefetch([key], base)
        return self._seen[key]

    def prefetch(self, refs: Iterable[tuple[str, str]], base: str) -> None:
        """Check every (reference, kind) not yet seen, concurrently; remember the results."""
        todo = {key: resolve_ref(key[0], base) for key in set(refs) if key not in self._seen}
        if not todo:
            return
        now = time.time()
        fresh = {
            key: hit
            for key, uri in todo.items()
            if self.trust_fresh and (hit := self.index.fresh(uri, key[1], now))
        }
        with ThreadPoolExecutor(PLAN_CONCURRENCY, thread_name_prefix="wansweep-plan") as pool:
            # Only inputs the index knows need a validator first (a listing or a HEAD); the
            # others are simply fetched, and their validator comes with their bytes.
            known = [
                uri
                for key, uri in todo.items()
                if key not in fresh and self.index.knows(uri, key[1])
            ]
            marks = validators(known, pool)
            results = [(key, hit, None) for key, hit in fresh.items()]
            results += [
                (key, hit, marks[uri])  # remembered again: the answer's new freshness
                for key, uri in todo.items()
                if key not in fresh and (hit := self.index.lookup(uri, key[1], marks.get(uri)))
            ]
            reused = {key for key, _, _ in results}
            misses = [key for key in todo if key not in reused]
            loaded = pool.map(lambda key: self._load(todo[key], key[1]), misses)
            results += [(key, *found) for key, found in zip(misses, loaded)]
        self.reused += len(reused)
        self.fetched += len(misses)
        for key, checked, mark in results:
            self._seen[key] = checked
            if mark:  # a failed fetch has none: failures are never remembered
                self.index.remember(key[1], mark, checked)
        self.index.save()

    @staticmethod
    def _load(uri: str, kind: str) -> tuple[Checked, Validator | None]:
        """Fetch, fully decode and hash one input: what it is, and its validator."""
        field = "image" if kind == "image" else "audio"
        try:
            data, mark = read_with_validator(uri)
        except FileNotFoundError as exc:
            problem = schema.Problem(field, "file_missing", f"file not found: {exc}")
            return Checked(uri, None, (problem,)), None
        except FetchRefused as exc:
            return Checked(uri, None, (schema.Problem(field, "fetch_refused", str(exc)),)), None
        except Exception as exc:
            problem = schema.Problem(field, "file_unreadable", f"could not read it: {exc}")
            return Checked(uri, None, (problem,)), None
        sha = hashlib.sha256(data).hexdigest()
        if kind == "image":
            info, problems = schema.check_image(data, field)
            if info is not None and not any(p.severity == "error" for p in problems):
                _remember_reference(sha, data, info.width * info.height)
        else:
            problems = schema.check_audio(data, field)
        return Checked(uri, sha, tuple(problems)), mark


def _remember_reference(sha: str, data: bytes, pixels: int) -> None:
    """Keep the image's small reference for this run's first-frame checks (no second read),
    decoded within the decode budget (all but a JPEG decode whole to be made small)."""
    from wansweep.media.frames import REFERENCES, reference_of

    with schema.DECODE_BUDGET.hold(pixels):
        REFERENCES.put(sha, reference_of(data))


PLAN_CONCURRENCY = 16  # inputs fetched and checked at once while planning


@dataclass
class _RowCheck:
    """Problems of one row as they are found (each names the row, its id, field, rule, value)."""

    index: int
    row_id: str
    problems: list[RowProblem]
    bad: bool = False

    def report(self, p: schema.Problem, value: Any) -> None:
        text = str(value)
        if len(text) > 60:
            text = text[:57] + "..."
        self.problems.append(
            RowProblem(self.index, self.row_id, p.field, p.rule, repr(text), p.msg, p.severity)
        )
        self.bad = self.bad or p.severity == "error"


class _Planner:
    """Expands one manifest row at a time into jobs; shared state: media cache, seen ids."""

    def __init__(
        self,
        spec: SweepSpec,
        manifest_uri: str,
        columns: list[str],
        media: MediaCache,
    ):
        self.manifest_uri = manifest_uri
        self.arms, self.seeds = spec.expand_arms(), spec.seed_list()
        self.media = media
        self.extra_cols = [c for c in columns if c not in KNOWN_COLUMNS]
        self.setting_cols = [c for c in columns if c in endpoints.SETTINGS]
        self.seen_ids: dict[str, int] = {}
        self.problems: list[RowProblem] = []

    def prefetch(self, records: list[dict[str, Any]]) -> None:
        """Check every distinct image and audio of the manifest up front, concurrently."""
        refs = []
        for rec in records:
            for column in ("image", "audio"):
                value = cell(rec.get(column, ""))
                if cell_problem(column, value) is None and (ref := str(value).strip()):
                    refs.append((ref, column))
        self.media.prefetch(refs, self.manifest_uri)

    def row(self, idx: int, rec: dict[str, Any]) -> list[Job]:
        """The jobs of one row; none when the row has an error (its problems are recorded)."""
        rec = {k: cell(v) for k, v in rec.items()}
        bad = {c: p for c in KNOWN_COLUMNS & set(rec) if (p := cell_problem(c, rec[c]))}
        row_id = "" if "id" in bad else str(rec.get("id") or "").strip()
        row_id = row_id or f"row{idx}"
        check = _RowCheck(idx, row_id, self.problems)
        for column, problem in sorted(bad.items()):
            check.report(problem, rec[column])
        extra = {}
        for column in self.extra_cols:
            extra[column], problem = metadata_value(column, rec[column])
            if problem is not None:
                check.report(problem, rec[column])
        if check.bad:
            return []
        if row_id in self.seen_ids:
            check.report(
                schema.Problem(
                    "id", "duplicate_id", f"id also used by row {self.seen_ids[row_id]}"
                ),
                row_id,
            )
        self.seen_ids.setdefault(row_id, idx)
        media = self._media(rec, check)
        seeds = self._row_seeds(rec, check)
        if media is None or seeds is None:
            return []
        image, audio = media
        overrides = normalise_settings({c: rec[c] for c in self.setting_cols if rec[c] != ""})
        if rec.get("negative_prompt"):
            overrides["negative_prompt"] = str(rec["negative_prompt"])
        if not isinstance(rec["prompt"], str):  # Parquet/JSONL: never stringify a number
            check.report(
                schema.Problem("prompt", "string_type", "prompt must be text"), rec["prompt"]
            )
            return []
        prompt = rec["prompt"]
        jobs, checked = [], set()
        for arm in self.arms:
            settings = {**arm.settings, **overrides}
            prof = endpoints.profile(arm.endpoint)
            if audio is not None and prof.field_of("audio") is None:
                msg = f"arm {arm.name}: {prof.alias} takes no audio file"
                check.report(schema.Problem("audio", "not_taken", msg), audio.uri)
                continue
            signature = repr((arm.endpoint, sorted(settings.items())))
            if signature not in checked:  # arms that send the same fields are checked once
                checked.add(signature)
                if overrides:  # a row's own setting this endpoint has no field for
                    settable = set(prof.settable())
                    unknown = {k: v for k, v in overrides.items() if k not in settable}
                    for p in (p for p in prof.refusals(unknown) if p.field in unknown):
                        named = schema.Problem(p.field, p.rule, f"arm {arm.name}: {p.msg}")
                        check.report(named, overrides.get(p.field, ""))
                fields = prof.request_fields(prompt, settings, None)
                media = {prof.field_of("image"): "x"}
                for p in prof.check({**fields, **media}):
                    check.report(p, fields.get(p.field, ""))
            if not check.bad:  # a bad setting cannot be priced
                jobs += [
                    self._job(idx, row_id, arm, prompt, settings, seed, image, audio, extra)
                    for seed in seeds
                ]
        return [] if check.bad else jobs

    def _media(
        self, rec: dict[str, Any], check: _RowCheck
    ) -> tuple[Checked, Checked | None] | None:
        image_ref = str(rec["image"]).strip()
        if not image_ref:
            check.report(schema.Problem("image", "missing", "no image given"), image_ref)
            return None
        image = self.media.get(image_ref, "image", self.manifest_uri)
        for p in image.problems:
            check.report(p, image_ref)
        audio = None
        if audio_ref := str(rec.get("audio") or "").strip():
            audio = self.media.get(audio_ref, "audio", self.manifest_uri)
            for p in audio.problems:
                check.report(p, audio_ref)
        return image, audio

    def _row_seeds(self, rec: dict[str, Any], check: _RowCheck) -> list[int | None] | None:
        row_seed = rec.get("seed", "")
        if row_seed == "":
            return self.seeds
        seed = parse_seed(row_seed)
        if seed is None:
            check.report(
                schema.Problem(
                    "seed", "seed_range", f"seed must be a whole number 0-{schema.SEED_MAX}"
                ),
                row_seed,
            )
            return None
        return [seed]

    def _job(self, idx, row_id, arm, prompt, settings, seed, image, audio, extra) -> Job:
        job = Job(
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
            estimated_usd=endpoints.profile(arm.endpoint).estimate(settings),
            extra=extra,
        )
        job.job_key = job.key()
        return job


def _seed_notes(arms: list, seeds: list[int | None]) -> list[str]:
    """Arms on an endpoint that takes no seed: their seeds are replicates, each a paid job."""
    if seeds == [None]:
        return []
    shown = ", ".join(str(s) for s in seeds[:5]) + (", ..." if len(seeds) > 5 else "")
    return [
        f"arm {arm.name}: {prof.alias} takes no seed, so seeds {shown} are replicates "
        f"({len(seeds)} paid jobs per row, each a different video)"
        for arm in arms
        if not (prof := endpoints.profile(arm.endpoint)).takes_seed
    ]


def check_size(spec: SweepSpec, rows: int) -> None:
    """Refuse a sweep of more than ``max_jobs`` jobs before one is built (or an arm expanded),
    saying how many and how to split it: a grid of 1,000 rows x 1,000 values x 1,000 seeds is
    10^9 jobs, which would fill memory long before any budget saw it."""
    arms, seeds = spec.arm_count(), len(spec.seed_list())
    per_row = arms * seeds
    jobs = rows * per_row
    if jobs <= spec.max_jobs:
        return
    if per_row > spec.max_jobs:
        fix = f"one row alone makes {per_row:,} jobs: use fewer arms or seeds"
    else:
        fix = f"split the manifest into parts of at most {spec.max_jobs // per_row:,} rows"
    raise PlanInvalid(
        f"the sweep would make {jobs:,} jobs ({rows:,} rows x {arms:,} arms x {seeds:,} "
        f"seeds), over max_jobs {spec.max_jobs:,}; {fix}, or raise max_jobs in the spec; "
        "nothing was submitted"
    )


def plan(
    spec: SweepSpec,
    manifest_uri: str,
    skip_invalid: bool = False,
    index_store: Store | None = None,
) -> Plan:
    """Validate every row and expand rows x arms x seeds into priced jobs. A row with any
    error gives no job; every problem of every row is listed. Identical jobs (same key: e.g.
    two rows with the same image bytes and prompt) are planned, and paid for, once.
    ``index_store``: where the media index lives (the archive), so that inputs an earlier plan
    checked are not downloaded again (see :mod:`wansweep.plan.media_index`)."""
    df = read_manifest(manifest_uri)
    check_size(spec, len(df))
    media = MediaCache(MediaIndex(index_store), trust_fresh=spec.trust_http_cache)
    planner = _Planner(spec, manifest_uri, list(df.columns), media)
    records = df.to_dict("records")
    planner.prefetch(records)
    unique: dict[str, Job] = {}
    for idx, rec in enumerate(records, start=1):
        for job in planner.row(idx, rec):
            unique.setdefault(job.job_key, job)
    result = Plan(
        jobs=list(unique.values()),
        problems=planner.problems,
        rows=len(df),
        media_fetched=media.fetched,
        media_reused=media.reused,
        notes=_seed_notes(planner.arms, planner.seeds),
    )
    if skip_invalid:
        result.skipped = result.errors
    return result
