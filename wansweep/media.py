"""Video probing, thumbnails and first-frame fidelity (PyAV, no ffmpeg binary)."""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import BinaryIO

import av
import numpy as np
from PIL import Image


@dataclass(frozen=True)
class Probe:
    duration: float
    fps: float
    frames: int
    width: int
    height: int
    codec: str
    has_audio: bool

    def as_dict(self) -> dict:
        return asdict(self)


Source = str | Path | BinaryIO | bytes


def _open(src: Source):
    return av.open(io.BytesIO(src) if isinstance(src, bytes) else src)


def decode_data_uri(uri: str) -> bytes:
    """The bytes of a ``data:`` URI (base64 or percent-encoded)."""
    import base64
    import binascii
    from urllib.parse import unquote_to_bytes

    header, _, payload = uri.partition(",")
    try:
        if header.endswith(";base64"):
            return base64.b64decode(payload, validate=True)
        return unquote_to_bytes(payload)
    except binascii.Error:
        raise ValueError("data URI is not valid base64") from None


def probe(src: Source) -> Probe:
    """Read duration, fps, frame count, size, codec and audio presence from the container."""
    with _open(src) as c:
        v = c.streams.video[0]
        fps = float(v.average_rate or v.base_rate or 0)
        if v.duration is not None and v.time_base is not None:
            duration = float(v.duration * v.time_base)
        else:
            duration = (c.duration or 0) / 1e6
        frames = v.frames or round(duration * fps)
        return Probe(
            duration=round(duration, 3),
            fps=round(fps, 3),
            frames=int(frames),
            width=v.codec_context.width,
            height=v.codec_context.height,
            codec=v.codec_context.name,
            has_audio=bool(c.streams.audio),
        )


def frames_at(src: Source, fractions: tuple[float, ...] = (0.0,)) -> list[Image.Image]:
    """Decode the frames at the given fractions of the clip (0 = first, 1 = last)."""
    with _open(src) as c:
        v = c.streams.video[0]
        total = v.frames or 0
        if not total:
            decoded = [f.to_image() for f in c.decode(video=0)]
            total = len(decoded)
            return [decoded[min(total - 1, int(fr * (total - 1)))] for fr in fractions]
        wanted = {min(total - 1, int(fr * (total - 1))): None for fr in fractions}
        last = max(wanted)
        for i, frame in enumerate(c.decode(video=0)):
            if i in wanted:
                wanted[i] = frame.to_image()
            if i >= last:
                break
        return [wanted[min(total - 1, int(fr * (total - 1)))] for fr in fractions]


def thumbnail_jpeg(image: Image.Image, width: int = 320) -> bytes:
    img = image.copy()
    img.thumbnail((width, width * 4))
    out = io.BytesIO()
    img.convert("RGB").save(out, "JPEG", quality=80)
    return out.getvalue()


def strip_jpeg(images: list[Image.Image], height: int = 120) -> bytes:
    """Frames side by side (first, middle, last): the contact sheet's cell."""
    scaled = [
        im.convert("RGB").resize((max(1, round(im.width * height / im.height)), height))
        for im in images
    ]
    sheet = Image.new(
        "RGB", (sum(im.width for im in scaled) + 2 * (len(scaled) - 1), height), "white"
    )
    x = 0
    for im in scaled:
        sheet.paste(im, (x, 0))
        x += im.width + 2
    out = io.BytesIO()
    sheet.save(out, "JPEG", quality=75)
    return out.getvalue()


def similarity(a: Image.Image, b: Image.Image, size: int = 64) -> float:
    """1 - mean absolute difference on small grey copies: 1.0 identical, ~0.5 unrelated."""
    x = np.asarray(a.convert("L").resize((size, size), Image.BILINEAR), dtype=np.float32)
    y = np.asarray(b.convert("L").resize((size, size), Image.BILINEAR), dtype=np.float32)
    return round(float(1.0 - np.abs(x - y).mean() / 255.0), 4)
