"""Measured quality of one video, from one decode: the metric table.

Every metric is computed at archive time from small grey copies of all the clip's frames
(decoded once, with the three full frames the thumbnails need), and lands in the sidecar, the
index and the report. None needs model weights. Each is listed in :data:`METRICS` with what
it means, its range and which way is better, which is what the paired statistics read; a new
metric is one :func:`metric` function and one row.

Definitions (``d[i]``: mean absolute difference of consecutive grey frames, 0-1):

- ``motion``: median ``d`` outside cuts (how much the picture moves); ``motion_std``: spread
  of the per-second motion (does it move evenly, or jerk and stall).
- ``frozen_fraction``: share of frame steps with no visible change (``d`` under 0.00005, or
  in a clip that moves, under a tenth of its median ``d`` up to 0.0012).
- ``black_fraction``: share of frames that are uniformly dark.
- ``flicker``: mean absolute second difference of frame brightness outside cuts (brightness
  that jitters from frame to frame; a steady fade scores ~0).
- ``cuts`` / ``cut_times``: hard cuts (:func:`cut_steps`: spikes of ``d`` or of the brightness
  histogram that hold, chosen on a labelled clip set); with ``multi_shots``, ``cuts_expected``
  from the prompt's ``Shot N [a-bs]`` markers, ``cut_error_s`` (mean distance from each
  expected cut to the nearest found) and ``cuts_unexpected``.
- ``first_frame_similarity``: fidelity of frame 0 to the input image (see :mod:`.media`).
- compliance: ``duration_error_s`` (output minus asked), ``resolution_ok``, ``audio_ok``
  (audio present when audio was given), ``compliant`` (all three hold).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

# The metric definitions' version, in every sidecar's ``quality``: 1 before the labelled clip
# set (cuts by an absolute step of 0.08, frozen under 0.00005, first frame by 1 - mean absolute
# difference), 2 since. Arms measured under different versions are not compared like for like.
QUALITY_VERSION = 2
GREY_SHORT_SIDE = 72  # pixels on the short side of the grey copies metrics read
# A step is frozen under 1/80 of a grey level on average; or, in a clip that moves, under a tenth
# of its median step up to a third of a grey level: a repeated frame changes by up to 0.001 while
# the encoder refines it (tests/clipset.py's freezes), a slow pan over a plain scene by 0.0004.
FROZEN_D, FROZEN_REL, FROZEN_MAX = 0.00005, 0.1, 0.0012
BLACK_LUMA, BLACK_STD = 0.1, 0.02  # decoded black is luma 16/255 ~ 0.063 (limited range)
# Cuts (chosen on the labelled clip set, tests/clipset.py; the comparison: bench/detectors.py).
# A cut is a step far above the steps around it, in the picture (mean absolute difference) or
# in the brightness histogram (which a fast pan hardly changes), that holds: the frames after
# it differ from the frames before it, which a one- or two-frame flash does not.
CUT_RATIO = 3.0  # a cut's step is at least this many times the median of the 4 on each side
CUT_MIN_D = 0.012  # and at least this large (codec noise in a still picture: ~0.002)
CUT_MIN_H = 0.15  # a histogram step (half the L1 distance of 32-bin histograms, 0-1)
CUT_HOLD = 0.5  # frames 1-3 after differ from frames 0-2 before by half the step or more
CUT_HOLD_OVER = 1.5  # and by 1.5 times what the frames on either side differ among themselves
HIST_BINS = 32
CUT_MATCH_S = 0.5

SHOT_RE = re.compile(
    r"Shot\s+(\d+)\s*\[\s*(\d+(?:\.\d+)?)\s*-\s*(\d+(?:\.\d+)?)\s*s\s*\]", re.IGNORECASE
)


def shot_starts(prompt: str) -> list[float]:
    """Start times (s) of shots marked like ``Shot 2 [4-8s]`` in a prompt, first shot excluded."""
    return sorted({float(m.group(2)) for m in SHOT_RE.finditer(prompt)} - {0.0})


@dataclass(frozen=True)
class Metric:
    name: str
    meaning: str
    range: str
    better: str | None  # "higher", "lower", or None (no direction: a description)


METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("motion", "how much the picture moves (median frame change, no cuts)", "0-1", None),
        Metric("motion_std", "spread of per-second motion (jerks and stalls)", "0-1", "lower"),
        Metric("frozen_fraction", "share of frame steps with no visible change", "0-1", "lower"),
        Metric("black_fraction", "share of uniformly dark frames", "0-1", "lower"),
        Metric("flicker", "brightness jitter between frames (no cuts)", "0-1", "lower"),
        Metric("cuts", "hard cuts found", "0-n", None),
        Metric(
            "cuts_expected", "cuts the prompt's Shot markers ask for (multi_shots)", "0-n", None
        ),
        Metric(
            "cut_error_s", "mean distance of asked cuts to the nearest found (s)", ">= 0", "lower"
        ),
        Metric("cuts_unexpected", "cuts found that no Shot marker asked for", "0-n", "lower"),
        Metric("first_frame_similarity", "first frame vs the input image (SSIM)", "0-1", "higher"),
        Metric("duration_error_s", "output duration minus the asked duration (s)", "any", None),
        Metric("compliant", "duration, resolution and audio as asked", "0/1", "higher"),
    )
}


def compared_measures() -> dict[str, str | None]:
    """Every measure the report compares arms on, as its column is named, with which way is
    better (None: described, never judged): cost and latency, then each metric above."""
    found: dict[str, str | None] = {"cost_usd": "lower", "wall_seconds": "lower"}
    for name, m in METRICS.items():
        found[name if name == "first_frame_similarity" else f"q_{name}"] = m.better
    return found


@dataclass(frozen=True)
class Decoded:
    """One pass over a clip: grey copies of every frame, their times, and full frames at
    the fractions asked for (thumbnails and the contact sheet)."""

    grey: np.ndarray  # (frames, h, w) float32, 0-1
    times: np.ndarray  # seconds
    picks: list[Image.Image]


def decode(path: Any, fractions: tuple[float, ...] = (0.0, 0.5, 1.0)) -> Decoded:
    import av

    with av.open(str(path)) as container:
        # ffmpeg's default threading: frame threads ("AUTO") cost 35% more CPU per clip
        # and a thread pool per open, and callers already decode one clip per core
        video = container.streams.video[0]
        total = video.frames or 0
        want = {min(total - 1, int(f * (total - 1))) for f in fractions} if total else set()
        fps = float(video.average_rate or 16)
        grey, times, picked, last = [], [], {}, None
        for i, frame in enumerate(container.decode(video=0)):
            grey.append(_luma(frame))
            times.append(float(frame.time) if frame.time is not None else i / fps)
            if i in want:
                picked[i] = frame.to_image()
            last = (i, frame)
    if last is None:
        raise ValueError("the video has no frames")
    n = last[0] + 1
    if len(picked) == len(want) and total == n:
        picks = [picked[min(n - 1, int(f * (n - 1)))] for f in fractions]
    else:  # the container did not know its frame count: a second pass for the three frames
        from wansweep.media.frames import frames_at

        picks = frames_at(path, fractions)
    return Decoded(np.asarray(grey, dtype=np.float32) / 255.0, np.asarray(times), picks)


def _luma(frame) -> np.ndarray:
    """A small grey copy: the decoded luma plane itself, sampled every few pixels (no
    colour conversion or scaling pass: that cost more than decoding)."""
    if frame.format.name not in ("yuv420p", "yuvj420p", "yuv422p", "yuv444p", "nv12"):
        frame = frame.reformat(format="yuv420p")
    plane = frame.planes[0]
    y = np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)[:, : plane.width]
    step = max(1, min(plane.width, plane.height) // GREY_SHORT_SIDE)
    return y[::step, ::step].copy()


# ---------------------------------------------------------------------------- metrics
@dataclass(frozen=True)
class Asked:
    """What the job asked for, as metrics compare it."""

    duration: float
    short_side: int | None  # pixels on the short side asked for (None: not asked)
    multi_shots: bool
    prompt: str
    audio: bool


Measure = Callable[["Clip"], dict[str, Any]]
_MEASURES: list[Measure] = []


def metric(fn: Measure) -> Measure:
    """Register a function of a :class:`Clip` returning some metrics (add its rows to
    :data:`METRICS`)."""
    _MEASURES.append(fn)
    return fn


@dataclass
class Clip:
    decoded: Decoded
    asked: Asked
    probe: Any  # media.Probe
    first_frame_similarity: float | None

    def __post_init__(self) -> None:
        g = self.decoded.grey
        self.d = np.abs(np.diff(g, axis=0)).mean(axis=(1, 2)) if len(g) > 1 else np.zeros(0)
        self.brightness = g.mean(axis=(1, 2))
        self.cut_steps = cut_steps(g)


def _histograms(grey: np.ndarray) -> np.ndarray:
    """Each frame's brightness histogram, as shares summing to 1."""
    bins = np.minimum((grey * HIST_BINS).astype(np.int32), HIST_BINS - 1)
    offsets = np.arange(len(grey))[:, None] * HIST_BINS
    counts = np.bincount(
        (bins.reshape(len(grey), -1) + offsets).ravel(), minlength=len(grey) * HIST_BINS
    )
    return counts.reshape(len(grey), HIST_BINS) / bins[0].size


def cut_steps(grey: np.ndarray) -> list[int]:
    """Frame steps (``i``: between frames ``i`` and ``i + 1``) that are hard cuts, from a
    clip's grey frames (0-1). Found: cuts between shots of one low-texture scene, in the dark
    and during fast pans; not taken for cuts: dissolves, pans, zooms, fades, flicker, freezes
    and flashes of one or two frames (recall and precision pinned by
    tests/unit/test_labelled_clips.py)."""
    if len(grey) < 2:
        return []
    hist = _histograms(grey)
    d = np.abs(np.diff(grey, axis=0)).mean(axis=(1, 2))
    h = np.abs(np.diff(hist, axis=0)).sum(axis=1) / 2

    def pixels(a: int, b: int) -> float:
        return float(np.abs(grey[a] - grey[b]).mean())

    def shares(a: int, b: int) -> float:
        return float(np.abs(hist[a] - hist[b]).sum() / 2)

    cuts = []
    for i in range(len(d)):
        before, after = range(max(0, i - 2), i + 1), range(i + 1, min(len(grey), i + 4))
        for steps, floor, distance in ((d, CUT_MIN_D, pixels), (h, CUT_MIN_H, shares)):
            if _spike(steps, i, floor) and _holds(before, after, distance, steps[i]):
                cuts.append(i)
                break
    return cuts


def _spike(steps: np.ndarray, i: int, floor: float) -> bool:
    """At least ``floor``, and :data:`CUT_RATIO` times the steps on either side (each side's
    median: the end of a fade or a pan is no spike against the still side)."""
    sides = [steps[max(0, i - 4) : i], steps[i + 1 : i + 5]]
    base = max((float(np.median(s)) for s in sides if len(s)), default=0.0)
    return bool(steps[i] >= floor and steps[i] >= CUT_RATIO * base)


def _holds(before: range, after: range, distance: Callable[[int, int], float], step: float) -> bool:
    """The change lasts: every frame after differs from every frame before by half the step or
    more, and by more than the frames on one side differ among themselves (a flash of one or
    two frames puts a lit and an unlit frame on one side)."""
    across = min(distance(a, b) for a in before for b in after)
    within = max(
        [distance(a, b) for side in (before, after) for a in side for b in side if a < b],
        default=0.0,
    )
    return across >= CUT_HOLD * step and across >= CUT_HOLD_OVER * within


def _outside_cuts(values: np.ndarray, cuts: list[int], reach: int = 1) -> np.ndarray:
    keep = np.ones(len(values), dtype=bool)
    for c in cuts:
        keep[max(0, c - reach + 1) : c + reach] = False
    return values[keep]


@metric
def _motion(c: Clip) -> dict[str, Any]:
    d = _outside_cuts(c.d, c.cut_steps)
    fps = c.probe.fps or 16
    per_second = [float(s.mean()) for s in np.array_split(d, max(1, round(len(d) / fps)))]
    return {
        "motion": round(float(np.median(d)), 5) if len(d) else None,
        "motion_std": round(float(np.std(per_second)), 5) if per_second else None,
        "frozen_fraction": round(float((c.d < _frozen_below(c.d)).mean()), 4) if len(c.d) else None,
    }


def _frozen_below(d: np.ndarray) -> float:
    return max(FROZEN_D, min(FROZEN_MAX, FROZEN_REL * float(np.median(d))))


@metric
def _black(c: Clip) -> dict[str, Any]:
    g = c.decoded.grey
    dark = (c.brightness < BLACK_LUMA) & (g.std(axis=(1, 2)) < BLACK_STD)
    return {"black_fraction": round(float(dark.mean()), 4)}


@metric
def _flicker(c: Clip) -> dict[str, Any]:
    second = np.abs(np.diff(c.brightness, n=2))
    second = _outside_cuts(second, [max(0, s - 1) for s in c.cut_steps], reach=2)
    return {"flicker": round(float(second.mean()), 5) if len(second) else None}


@metric
def _cuts(c: Clip) -> dict[str, Any]:
    times = c.decoded.times
    found = [round(float(times[s + 1]), 3) for s in c.cut_steps]
    out: dict[str, Any] = {"cuts": len(found), "cut_times": found}
    if c.asked.multi_shots:
        expected = [t for t in shot_starts(c.asked.prompt) if t < c.asked.duration]
        out["cuts_expected"] = len(expected)
        out["cut_error_s"] = (
            round(
                float(
                    np.mean(
                        [
                            min((abs(t - f) for f in found), default=c.asked.duration)
                            for t in expected
                        ]
                    )
                ),
                3,
            )
            if expected
            else None
        )
        out["cuts_unexpected"] = sum(all(abs(f - t) > CUT_MATCH_S for t in expected) for f in found)
    return out


@metric
def _compliance(c: Clip) -> dict[str, Any]:
    p, a = c.probe, c.asked
    error = round(p.duration - a.duration, 3)
    resolution_ok = a.short_side is None or min(p.width, p.height) == a.short_side
    audio_ok = p.has_audio if a.audio else True
    return {
        "first_frame_similarity": c.first_frame_similarity,
        "duration_error_s": error,
        "resolution_ok": bool(resolution_ok),
        "audio_ok": bool(audio_ok),
        "compliant": bool(abs(error) < 0.5 and resolution_ok and audio_ok),
    }


def measure(clip: Clip) -> dict[str, Any]:
    """Every registered metric of one clip, and ``version`` (:data:`QUALITY_VERSION`). A metric
    that fails is left out, never an error: quality numbers must not cost a finished video its
    archive."""
    out: dict[str, Any] = {"version": QUALITY_VERSION}
    for fn in _MEASURES:
        try:
            out.update(fn(clip))
        except Exception:  # noqa: BLE001
            continue
    return out
