"""The limits of the media a request points at (images, audio) and the shape of a problem.

Both the local fal-compatible server and the planner check media through :func:`check_image`
and :func:`check_audio`, and request fields through the endpoint's profile
(:mod:`wansweep.plan.endpoints`), so a row the planner accepts is a row the server accepts.
"""

from __future__ import annotations

import io
import re
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

SEED_MAX = 2**32 - 1  # seeds are unsigned 32-bit integers
IMAGE_SIDE_MIN, IMAGE_SIDE_MAX = 240, 7680  # hard limit (schema, upstream errors)
IMAGE_SIDE_SOFT = (360, 2000)  # the page text's range: a warning only
IMAGE_MAX_BYTES = 25 * 1024 * 1024
IMAGE_FORMATS = ("JPEG", "PNG", "BMP", "WEBP")
AUDIO_MAX_BYTES = 15 * 1024 * 1024
AUDIO_SECONDS = (3.0, 30.0)
AUDIO_FORMATS = ("wav", "mp3")


@dataclass(frozen=True)
class Problem:
    """One broken rule: which field, which rule, what was found."""

    field: str
    rule: str
    msg: str
    severity: str = "error"  # or "warning"

    def fal_detail(self) -> dict[str, Any]:
        return {"loc": ["body", self.field], "msg": self.msg, "type": self.rule}


def short_side(resolution: Any) -> int | None:
    """The short side a resolution names ("720p" -> 720), or None (an aspect ratio, say)."""
    text = str(resolution or "").lower()  # MiniMax spells it "768P"
    return int(text[:-1]) if text.endswith("p") and text[:-1].isdigit() else None


@dataclass(frozen=True)
class ImageInfo:
    format: str
    width: int
    height: int
    size: int
    has_alpha: bool
    frames: int = 1


class DecodeBudget:
    """Pixels being decoded at once, across threads: an image waits until its pixels fit, so
    memory follows the budget, not how many files are checked at once (32 8K images checked
    by 16 threads held 4.5 GB). An image larger than the whole budget is decoded alone."""

    def __init__(self, pixels: int):
        self.limit = pixels
        self.used = 0
        self._cond = threading.Condition()

    @contextmanager
    def hold(self, pixels: int) -> Iterator[None]:
        want = min(pixels, self.limit)
        with self._cond:
            self._cond.wait_for(lambda: self.used + want <= self.limit)
            self.used += want
        try:
            yield
        finally:
            with self._cond:
                self.used -= want
                self._cond.notify_all()


# 64 Mpx: one image at fal's largest (7680x7680, 59 Mpx) or ~30 at 1080p at once
DECODE_BUDGET = DecodeBudget(64 * 2**20)
_OPEN_LOCK = threading.Lock()  # warnings are caught process-wide: one image opened at a time


def _open(data: bytes) -> tuple[Any, list[str]]:
    """The image opened (headers read, nothing decoded) and what Pillow warned while reading
    them (a damaged EXIF block), as text: Pillow's own warnings would print its install path."""
    from PIL import Image

    with _OPEN_LOCK, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        img = Image.open(io.BytesIO(data))
    # a bomb's warning is not kept: its size is checked against fal's limits below
    kept = [w for w in caught if not issubclass(w.category, Image.DecompressionBombWarning)]
    return img, [" ".join(str(w.message).split()) for w in kept]


def _decode(img: Any) -> None:
    """Read every byte of the image, so a truncated or damaged file fails here and not at fal,
    holding as little of it as the format allows: a PNG's chunks are checked against their
    CRCs without decoding a pixel; a JPEG decodes at 1/8 scale (its whole stream still read);
    the rest decode within :data:`DECODE_BUDGET`."""
    width, height = img.size
    if img.format == "PNG":
        img.verify()
        return
    if img.format == "JPEG":
        img.draft(img.mode, (max(1, width // 8), max(1, height // 8)))
    with DECODE_BUDGET.hold(img.size[0] * img.size[1]):
        img.load()


def _bomb(field: str, exc: Exception) -> Problem:
    digits = "".join(c for c in str(exc).split(" pixels")[0] if c.isdigit())
    pixels = f"{int(digits):,} pixels" if digits else "too many pixels"
    return Problem(
        field,
        "image_dimensions",
        f"Image has {pixels}, a decompression bomb far beyond fal's largest "
        f"({IMAGE_SIDE_MAX}x{IMAGE_SIDE_MAX}px); it was not decoded",
    )


def check_image(data: bytes, field: str = "image_url") -> tuple[ImageInfo | None, list[Problem]]:
    """Check image bytes against the endpoint's rules, decoding within :data:`DECODE_BUDGET`
    and never an image beyond fal's largest (a decompression bomb is named as such)."""
    from PIL import Image

    problems: list[Problem] = []
    if len(data) > IMAGE_MAX_BYTES:
        problems.append(
            Problem(
                field, "file_too_large", f"Image is {len(data) / 2**20:.1f} MB; the limit is 25 MB"
            )
        )
    try:
        img, notes = _open(data)
        with img:
            fmt = (img.format or "").upper()
            width, height = img.size
            has_alpha = img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
                img.mode == "P" and "transparency" in img.info
            )
            frames = getattr(img, "n_frames", 1) if fmt in IMAGE_FORMATS else 1
            if width * height <= IMAGE_SIDE_MAX**2:  # never decode beyond fal's largest
                _decode(img)
    except Image.DecompressionBombError as exc:
        return None, [*problems, _bomb(field, exc)]
    except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError and more
        damaged = any(word in str(exc).lower() for word in ("truncated", "broken", "crc", "eof"))
        rule, what = (
            ("image_truncated", "The image file is truncated or damaged")
            if damaged
            else ("image_unreadable", "Could not read the image: not an image")
        )
        return None, [*problems, Problem(field, rule, what)]
    info = ImageInfo(fmt, width, height, len(data), has_alpha, frames)
    problems += [
        Problem(field, "image_metadata", f"Image metadata is damaged ({note})", "warning")
        for note in notes
    ]
    if fmt not in IMAGE_FORMATS:
        problems.append(
            Problem(
                field,
                "image_format",
                f"Image format {fmt or 'unknown'} is not supported; use JPEG, PNG, BMP or WEBP",
            )
        )
    if frames > 1:
        problems.append(
            Problem(
                field,
                "image_animated",
                f"Image is animated ({frames:,} frames); fal takes its first frame only",
                "warning",
            )
        )
    if has_alpha:
        problems.append(
            Problem(
                field,
                "image_alpha",
                "Image has an alpha channel; flatten it (PNG without alpha)",
                "warning",
            )
        )
    for side, value in (("width", width), ("height", height)):
        if not IMAGE_SIDE_MIN <= value <= IMAGE_SIDE_MAX:
            problems.append(
                Problem(
                    field,
                    "image_dimensions",
                    f"Image {side} {value}px is outside {IMAGE_SIDE_MIN}-{IMAGE_SIDE_MAX}px",
                )
            )
        elif not IMAGE_SIDE_SOFT[0] <= value <= IMAGE_SIDE_SOFT[1]:
            problems.append(
                Problem(
                    field,
                    "image_dimensions_advised",
                    f"Image {side} {value}px is outside the advised "
                    f"{IMAGE_SIDE_SOFT[0]}-{IMAGE_SIDE_SOFT[1]}px",
                    "warning",
                )
            )
    return info, problems


def check_audio(data: bytes, field: str = "audio_url") -> list[Problem]:
    """Check audio bytes: WAV or MP3, 3-30 s, at most 15 MB."""
    import av

    problems: list[Problem] = []
    if len(data) > AUDIO_MAX_BYTES:
        problems.append(
            Problem(
                field, "file_too_large", f"Audio is {len(data) / 2**20:.1f} MB; the limit is 15 MB"
            )
        )
    try:
        with av.open(io.BytesIO(data)) as container:
            fmt = container.format.name
            seconds = container.duration / 1e6 if container.duration else None
            if seconds is None and container.streams.audio:
                stream = container.streams.audio[0]
                if stream.duration and stream.time_base:
                    seconds = float(stream.duration * stream.time_base)
            has_audio = bool(container.streams.audio)
    except Exception:
        return problems + [Problem(field, "audio_unreadable", "Could not read the audio file")]
    if not has_audio or not any(f in fmt.split(",") for f in AUDIO_FORMATS):
        problems.append(
            Problem(field, "audio_format", f"Audio format {fmt} is not supported; use WAV or MP3")
        )
    if seconds is None or not AUDIO_SECONDS[0] <= seconds <= AUDIO_SECONDS[1]:
        got = "unknown" if seconds is None else f"{seconds:.1f} s"
        problems.append(Problem(field, "audio_duration", f"Audio lasts {got}; it must last 3-30 s"))
    return problems


def output_size(
    image_w: int, image_h: int, resolution: Any = None, aspect_ratio: Any = None
) -> tuple[int, int]:
    """Output frame size: the resolution names the short side (720 for an endpoint that takes
    none); the aspect is the ``aspect_ratio`` asked for ("9:16"), else the image's."""
    short = short_side(resolution) or 720
    if isinstance(aspect_ratio, str) and (m := re.fullmatch(r"(\d+):(\d+)", aspect_ratio)):
        image_w, image_h = int(m.group(1)), int(m.group(2))
    if image_w >= image_h:
        w, h = round(short * image_w / image_h), short
    else:
        w, h = short, round(short * image_h / image_w)
    return w - w % 2, h - h % 2
