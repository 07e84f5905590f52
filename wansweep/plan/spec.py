"""Sweep specs (YAML), arms, seeds and the job grid."""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from wansweep.errors import SpecError
from wansweep.fal.types import PollSpec
from wansweep.plan import endpoints, schema
from wansweep.plan.settings import check_setting_names, label, normalise_settings
from wansweep.plan.strict_yaml import invalid, strict_yaml

DEFAULT_STORE = "./archive"  # the archive when neither the spec nor the command names one
DEFAULT_MAX_ATTEMPTS = 2
DEFAULT_CONCURRENCY = 8
DEFAULT_MAX_JOBS = 500_000  # a plan of this many takes ~0.7 GB; 100,000 run in one process


# unknown keys are errors, and so are infinities and NaNs (`budget_usd: .inf` is no budget)
STRICT = ConfigDict(extra="forbid", allow_inf_nan=False)
SeedValue = Annotated[int, Field(strict=True, ge=0, le=schema.SEED_MAX)]
MAX_SEEDS = 10_000  # seeds per row: each one multiplies the sweep


class Seeds(BaseModel):
    """Seeds as a list, a range, or N random ones drawn from a fixed master seed; each a whole
    number 0-SEED_MAX (never truncated), at most MAX_SEEDS of them."""

    model_config = STRICT
    values: list[SeedValue] | None = Field(None, max_length=MAX_SEEDS)
    range: tuple[SeedValue, SeedValue] | None = Field(
        None, description="[start, stop) like Python's range"
    )
    random: int | None = Field(None, ge=1, le=MAX_SEEDS)
    master_seed: int = 0

    @model_validator(mode="after")
    def _one_form(self) -> Seeds:
        if sum(x is not None for x in (self.values, self.range, self.random)) != 1:
            raise ValueError("give exactly one of values, range or random")
        if self.range is not None and not 0 < self.range[1] - self.range[0] <= MAX_SEEDS:
            raise ValueError(f"range must hold 1 to {MAX_SEEDS} seeds (got {list(self.range)})")
        return self

    def expand(self) -> list[int]:
        if self.values is not None:
            return list(dict.fromkeys(self.values))
        if self.range is not None:
            return list(range(*self.range))
        rng = random.Random(self.master_seed)
        return [rng.randrange(2**31) for _ in range(self.random or 0)]


class Arm(BaseModel):
    model_config = STRICT
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    endpoint: str
    settings: dict[str, Any] = {}


class ReconcileSpec(BaseModel):
    """Settling submits whose answer was lost, through fal's request listing (seconds).

    fal lists only finished requests, maybe hours late; a submit carries a start deadline
    (``start_timeout``: fal ends it unstarted, unbilled, after that long), so once
    ``settle_after`` has passed since a lost submit, a request of ours would be listed if fal
    had taken it. Before that, "not listed" proves nothing and the job stays ``ambiguous``."""

    model_config = STRICT
    grace: float = Field(20.0, ge=0, le=600, description="look again this long after a loss")
    start_timeout: float = Field(3600.0, ge=10, le=86400)
    settle_after: float = Field(
        8100.0, ge=1, le=7 * 86400, description="start timeout + longest run + listing lag"
    )

    @model_validator(mode="after")
    def _settles_after_start(self) -> ReconcileSpec:
        if self.settle_after <= self.start_timeout:
            raise ValueError(
                "settle_after must exceed start_timeout: until then a request fal took may "
                "still be queued, and queued requests are not listed"
            )
        return self


class LeaseSpec(BaseModel):
    """One worker per job across processes: a lease not renewed for ``ttl`` s is taken over;
    a job another process holds is looked at every ``poll`` s."""

    model_config = STRICT
    ttl: float = Field(120.0, ge=1, le=3600)
    poll: float = Field(5.0, gt=0, le=600)


class RunSettings(BaseModel):
    """How a sweep runs, spelled once: read from the spec's YAML, the command's options applied
    on top by :func:`load_spec`, and carried unchanged to every job's submit (it crosses
    processes: a shard's worker gets it as a flow parameter)."""

    model_config = STRICT
    budget_usd: float | None = Field(
        None, gt=0, allow_inf_nan=False, description="the most a run may commit (USD)"
    )
    concurrency: int = Field(DEFAULT_CONCURRENCY, ge=1, le=1000, description="jobs in flight")
    endpoint_concurrency: int = Field(
        DEFAULT_CONCURRENCY, ge=1, le=1000, description="in-flight fal requests per endpoint"
    )
    max_attempts: int = Field(
        DEFAULT_MAX_ATTEMPTS,
        ge=1,
        le=10,
        description="submits fal may have queued per job (failed, unbilled generations are "
        "tried again within it); a submit that surely never reached fal does not count",
    )
    poll: PollSpec = PollSpec()
    reconcile: ReconcileSpec = ReconcileSpec()
    leases: LeaseSpec = LeaseSpec()
    allow_fallbacks: bool = Field(
        False,
        description="let fal serve a request with another, 'equivalent' model when the asked "
        "one is down (off: an A/B arm served by another model is a wrong answer, paid for)",
    )
    resubmit_expired: bool = Field(
        False, description="pay again, once per job, for a result or video fal no longer holds"
    )
    resubmit_ambiguous: bool = Field(
        False,
        description="pay again, once per job, for a submit whose answer was lost and that fal's "
        "records cannot settle yet (it may then be paid twice)",
    )
    global_limits: bool = Field(
        False, description="hold a Prefect global concurrency slot per in-flight fal request"
    )

    def run_settings(self) -> RunSettings:
        """These settings alone (a spec's are a part of it), for the jobs of a run."""
        return RunSettings(**{name: getattr(self, name) for name in RunSettings.model_fields})


class SweepSpec(RunSettings):
    """A sweep: which endpoints and settings, on which manifest, for how much."""

    model_config = STRICT
    name: str = Field(
        pattern=r"^[a-z0-9][a-z0-9-]*$", description="lowercase letters, digits, dashes"
    )
    manifest: str | None = None
    store: str | None = None
    endpoints: list[str] = []
    defaults: dict[str, Any] = {}
    grid: dict[str, list[Any]] = {}
    zip: dict[str, list[Any]] = {}
    per_endpoint: dict[str, dict[str, Any]] = {}
    arms: list[Arm] = []
    seeds: Seeds | Annotated[list[SeedValue], Field(max_length=MAX_SEEDS)] | None = None
    primary_measure: str | None = Field(
        None,
        description="the one measure the A/B verdict is judged on alone (at 5%); every other "
        "is judged with Holm's correction across them (see wansweep.results.stats)",
    )
    # the most jobs one plan may make (rows x arms x seeds): a larger one is refused first
    max_jobs: int = Field(DEFAULT_MAX_JOBS, ge=1)
    trust_http_cache: bool = Field(
        False,
        description="a re-plan trusts a web input's remembered check, without asking, while "
        "its server's Cache-Control max-age (or Expires) says the answer is fresh; only for "
        "origins that never change a file within that time (see wansweep.plan.media_index)",
    )

    @field_validator("primary_measure")
    @classmethod
    def _primary(cls, value: str | None) -> str | None:
        from wansweep.media.quality import compared_measures

        judged = [m for m, better in compared_measures().items() if better]
        if value is not None and value not in judged:
            raise ValueError(
                f"{value!r} is not a measure with a better direction; use one of {judged}"
            )
        return value

    @field_validator("endpoints")
    @classmethod
    def _endpoints(cls, value: list[str]) -> list[str]:
        return [resolve_endpoint(e) for e in value]

    @field_validator("defaults", "grid", "zip", "per_endpoint")
    @classmethod
    def _known_settings(cls, value: dict[str, Any], info) -> dict[str, Any]:
        keys = value.keys()
        if info.field_name == "per_endpoint":
            for ep, settings in value.items():
                resolve_endpoint(ep)
                check_setting_names(settings, f"per_endpoint.{ep}")
            return {resolve_endpoint(k): v for k, v in value.items()}
        check_setting_names(dict.fromkeys(keys), info.field_name)
        return value

    @model_validator(mode="after")
    def _shape(self) -> SweepSpec:
        if not self.arms and not self.endpoints:
            raise ValueError("give endpoints (with an optional grid) or named arms")
        lengths = {len(v) for v in self.zip.values()}
        if len(lengths) > 1:
            raise ValueError(f"zip: all lists must have the same length (got {sorted(lengths)})")
        overlap = set(self.zip) & set(self.grid)
        if overlap:
            raise ValueError(f"zip and grid both set {sorted(overlap)}; use one")
        names = [a.name for a in self.arms]
        if len(names) != len(set(names)):
            raise ValueError("arms: names must be unique")
        return self

    def arm_count(self) -> int:
        """How many arms :meth:`expand_arms` would make, without making them."""
        zipped = len(next(iter(self.zip.values()))) if self.zip else 1
        grid = math.prod(len(values) for values in self.grid.values()) * zipped
        return len(self.arms) or len(self.endpoints) * grid

    def seed_list(self) -> list[int | None]:
        if self.seeds is None:
            return [None]
        if isinstance(self.seeds, list):
            return list(dict.fromkeys(self.seeds))
        return self.seeds.expand()

    def expand_arms(self) -> list[Arm]:
        """Named arms as given, or endpoints x grid (x zip), each named from its settings."""
        if self.arms:
            return [
                Arm(
                    name=a.name,
                    endpoint=resolve_endpoint(a.endpoint),
                    settings=self._settings(resolve_endpoint(a.endpoint), a.settings, a.name),
                )
                for a in self.arms
            ]
        grid_keys = list(self.grid)
        zipped = [dict(zip(self.zip, values)) for values in zip(*self.zip.values())] or [{}]
        arms = []
        for endpoint in self.endpoints:
            for combo in itertools.product(*(self.grid[k] for k in grid_keys)):
                for z in zipped:
                    varied = {**dict(zip(grid_keys, combo)), **z}
                    name = "-".join(
                        [endpoint_alias(endpoint), *(label(k, v) for k, v in varied.items())]
                    )
                    arms.append(
                        Arm(
                            name=name,
                            endpoint=endpoint,
                            settings=self._settings(endpoint, varied, name),
                        )
                    )
        return arms

    def _settings(self, endpoint: str, varied: dict[str, Any], arm: str) -> dict[str, Any]:
        """Every setting stated: the endpoint's defaults < spec defaults < per-endpoint < the
        arm's own. A setting the endpoint cannot honour is refused (:class:`SpecError`),
        naming the arm, the setting and what the endpoint takes: never dropped or rounded."""
        prof = endpoints.profile(endpoint)
        merged = normalise_settings(
            {**self.defaults, **self.per_endpoint.get(endpoint, {}), **varied}
        )
        refused = prof.refusals(merged)
        if refused:
            raise SpecError(
                f"arm {arm} ({prof.id}) cannot be run as given:\n"
                + "\n".join(f"  - {p.field}: {p.msg}" for p in refused)
            )
        return prof.complete(merged)


def resolve_endpoint(name: str) -> str:
    """An endpoint id from an id or a profile's alias (ValueError naming the known ones)."""
    return endpoints.profile(name).id


def endpoint_alias(endpoint: str) -> str:
    return endpoints.profile(endpoint).alias


def _is_uri_or_absolute(value: str) -> bool:
    return "://" in value or value.startswith(("/", "~"))


def load_spec(path: str | Path, **overrides: Any) -> SweepSpec:
    """Read and validate a spec; errors name the key and what was expected."""
    path = Path(path)
    try:
        data = strict_yaml(path.read_text()) or {}
    except FileNotFoundError:
        raise SpecError(f"sweep spec {path} not found") from None
    except yaml.YAMLError as exc:
        raise SpecError(f"sweep spec {path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise SpecError(f"sweep spec {path}: expected a mapping at the top level")
    # the spec's own paths are read from the spec's folder, wherever it is run from; the
    # command's (overrides) from where it runs, as a shell reads them
    for key in ("manifest", "store"):
        value = data.get(key)
        if isinstance(value, str) and value and not _is_uri_or_absolute(value):
            data[key] = str((path.parent / value).resolve())
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return SweepSpec.model_validate(data)
    except ValidationError as exc:
        raise invalid("sweep spec", path, exc) from None


@dataclass
class Job:
    """One (manifest row, arm, seed): the unit that is paid for once."""

    job_key: str
    arm: str
    endpoint: str
    row_index: int  # 1-based data row of the manifest
    row_id: str
    prompt: str
    settings: dict[str, Any]
    seed: int | None
    image_uri: str
    image_sha256: str
    audio_uri: str | None = None
    audio_sha256: str | None = None
    estimated_usd: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def request_fields(self) -> dict[str, Any]:
        """The request body without the media URLs (they are resolved at submit time), in
        the endpoint's own field names."""
        return endpoints.profile(self.endpoint).request_fields(
            self.prompt, self.settings, self.seed
        )

    def key(self) -> str:
        """This job's key (:func:`job_key`) from its request as its endpoint takes it."""
        prof = endpoints.profile(self.endpoint)
        fields = prof.key_fields(self.request_fields())
        replicate = self.seed if not prof.takes_seed else None
        return job_key(self.endpoint, fields, self.image_sha256, self.audio_sha256, replicate)

    @property
    def video_seconds(self) -> int:
        return endpoints.profile(self.endpoint).seconds(self.settings)


def job_key(
    endpoint: str,
    request_fields: dict[str, Any],
    image_sha256: str,
    audio_sha256: str | None,
    replicate: int | None = None,
) -> str:
    """Stable across runs, machines and row order; the image counts by its bytes, not its path.
    ``replicate``: which repeat of the same request (a seed given to an endpoint that takes
    none), so repeats stay distinct jobs rather than one cached job."""
    parts = {
        "endpoint": endpoint,
        "input": request_fields,
        "image": image_sha256,
        "audio": audio_sha256,
    }
    if replicate is not None:  # absent otherwise: the keys of every archive made before
        parts["replicate"] = replicate
    canonical = json.dumps(
        parts,
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()[:24]
