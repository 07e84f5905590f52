"""Settings of the local fal-compatible server: latency model, account concurrency, faults."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

FAULTS = {
    "submit_429": "submit answered 429 (not accepted)",
    "submit_401": "submit answered 401: the key is refused (as a revoked key or a locked account)",
    "submit_5xx": "submit answered a JSON 500 (not accepted)",
    "submit_ingress_5xx": "submit answered an nginx-style 502 (not accepted)",
    "drop_after_accept": "submit accepted, then the connection dropped before the answer",
    "submit_5xx_after_accept": "submit accepted, then answered a JSON 500 (fal's app)",
    "listing_payloads": "a request is listed without its payload (payload storage off)",
    "fetch_fail": "fetching an input URL fails; the 422 quotes the URL, as fal's errors do",
    "status_429": "status poll answered 429",
    "status_5xx": "status poll answered an nginx-style 503",
    "stream_drop": "a status stream breaks before its next event",
    "result_5xx": "result fetch answered a JSON 500",
    "failed": "generation failed (result 500, not billed)",
    "webhook_drop": "the webhook of a finished request is never delivered",
    "flagged": "input refused by the safety checker (result 422)",
    "download_fail": "video download dropped half-way",
    "download_slow": "video download throttled",
    "fallback": "a request without fal's no-fallback headers is served by another endpoint",
}


@dataclass(frozen=True)
class Latency:
    """Seconds in queue before a slot is sought, and inference seconds per second of video."""

    queue: float = 0.0
    standard: float = 0.0
    flash: float = 0.0
    fixed: float | None = None  # when set: every job takes this long in total (queue + inference)

    PRESETS = {
        "zero": {},
        "demo": {"queue": 0.5, "standard": 0.3, "flash": 0.15},
        "realistic": {"queue": 5.0, "standard": 12.0, "flash": 5.0},
    }

    @classmethod
    def parse(cls, text: str) -> Latency:
        """``zero``, ``demo``, ``realistic``, or ``queue=1,standard=2,flash=1`` / ``fixed=5``."""
        text = (text or "zero").strip()
        if text in cls.PRESETS:
            return cls(**cls.PRESETS[text])
        values = _parse_pairs(text, {f.name for f in fields(cls)}, "latency")
        return cls(**values)

    def split(self, endpoint: str, video_seconds: float) -> tuple[float, float]:
        """(queue seconds, inference seconds) for one job."""
        if self.fixed is not None:
            return self.fixed * 0.2, self.fixed * 0.8
        per_second = self.flash if endpoint.endswith("/flash") else self.standard
        return self.queue, per_second * video_seconds


@dataclass(frozen=True)
class Faults:
    rates: dict[str, float] = field(default_factory=dict)
    retention: float = 3600.0  # seconds a result stays fetchable after completion
    slow_bytes_per_s: float = 256 * 1024
    listing_lag: float = 0.0  # seconds before a finished request appears in the listing

    @classmethod
    def parse(cls, text: str) -> Faults:
        """``submit_429=0.1,failed=0.05,retention=360`` (rates are probabilities 0-1)."""
        if not text or text.strip() in ("none", ""):
            return cls()
        settings = ("retention", "slow_bytes_per_s", "listing_lag")
        values = _parse_pairs(text, set(FAULTS) | set(settings), "faults")
        extra = {k: values.pop(k) for k in settings if k in values}
        for name in settings:
            if name in extra and not 0 <= extra[name] < 10**9:
                raise ValueError(f"faults: {name}={extra[name]} must be a non-negative number")
        for name, rate in values.items():
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"faults: {name}={rate} is not a probability between 0 and 1")
        return replace(cls(rates=values), **extra)


def _parse_pairs(text: str, allowed: set[str], what: str) -> dict[str, float]:
    values: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep or key.strip() not in allowed:
            raise ValueError(
                f"{what}: cannot read {part!r}; expected NAME=NUMBER with NAME one of "
                f"{', '.join(sorted(allowed))}"
            )
        try:
            values[key.strip()] = float(value)
        except ValueError:
            raise ValueError(f"{what}: {key}={value!r} is not a number") from None
    return values


@dataclass(frozen=True)
class ServerConfig:
    latency: Latency = Latency()
    faults: Faults = Faults()
    concurrency: int = 10  # IN_PROGRESS requests at once (fal accounts start at 2)
    media: str = "full"  # "full" or "tiny" (cheap clips for benchmarks)
    fault_seed: int = 0
    key: str | None = None  # when set, Authorization must carry this key
    listing: str = (
        "documented"  # or "cooperative": queued requests listed at once, payloads as sent
    )
    cancel_running: str = "complete"  # or "stop": what a cancelled running request does
    clock_offset: float = 0.0  # seconds the server's clock is ahead of this machine's
    status_stream: str = "on"  # "404" or "405": answered instead (a server without streams)
    price_factor: float = 1.0  # fal's prices against the endpoint profiles' (a price change)

    def __post_init__(self) -> None:
        if not 1 <= self.concurrency <= 10_000:
            raise ValueError(f"concurrency must be between 1 and 10000 (got {self.concurrency})")
        choices = (
            ("media", ("full", "tiny")),
            ("listing", ("documented", "cooperative")),
            ("cancel_running", ("complete", "stop")),
            ("status_stream", ("on", "404", "405")),
        )
        for name, allowed in choices:
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}")
        if abs(self.clock_offset) > 86400 * 365:
            raise ValueError("clock_offset must be within a year")
        if not 0 < self.price_factor <= 100:
            raise ValueError("price_factor must be above 0 and at most 100")
