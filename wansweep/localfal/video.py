"""Synthetic Wan-like clips: the input image as first frame, then seeded camera motion.

Deterministic: the same image, prompt, seed and settings give the same bytes.
"""

from __future__ import annotations

import hashlib
import io
import random
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np
from PIL import Image, ImageOps

from wansweep.media.quality import shot_starts
from wansweep.plan.schema import output_size

FPS = 16


@dataclass(frozen=True)
class Clip:
    data: bytes
    width: int
    height: int
    fps: float
    num_frames: int
    duration: float


def _motion(rng: random.Random) -> tuple[float, float, float]:
    """(zoom at the end, pan x, pan y) as fractions of the frame."""
    return 1.0 + rng.uniform(0.05, 0.3), rng.uniform(-0.08, 0.08), rng.uniform(-0.08, 0.08)


def render_clip(
    image_bytes: bytes,
    *,
    prompt: str,
    seed: int,
    resolution: str | None,
    duration: str,
    aspect_ratio: str | None = None,
    multi_shots: bool = False,
    audio: bytes | None = None,
    fps: int = FPS,
    short_side: int | None = None,
) -> Clip:
    """Encode an H.264 MP4. ``short_side`` overrides the resolution (cheap-media mode)."""
    img = ImageOps.exif_transpose(Image.open(io.BytesIO(image_bytes))).convert("RGB")
    width, height = output_size(img.width, img.height, resolution, aspect_ratio)
    if short_side:
        scale = short_side / min(width, height)
        width, height = int(width * scale) // 2 * 2, int(height * scale) // 2 * 2
    base = img.resize((width, height), Image.BILINEAR)
    seconds = int(duration)
    n_frames = seconds * fps
    digest = hashlib.sha256(f"{seed}\0{prompt}".encode()).digest()
    rng = random.Random(digest)
    cuts = [int(t * fps) for t in shot_starts(prompt)] if multi_shots else []
    frozen, black = _segments(prompt, "Freeze", fps), _segments(prompt, "Black", fps)
    shots = [0, *[c for c in cuts if 0 < c < n_frames], n_frames]

    out = io.BytesIO()
    with av.open(out, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": "28", "tune": "zerolatency"}
        astream = _add_audio(container) if audio else None
        for s, (start, end) in enumerate(zip(shots, shots[1:])):
            zoom, px, py = _motion(rng)
            frame_src = base if s == 0 else ImageOps.mirror(base) if s % 2 else ImageOps.flip(base)
            for i in range(start, end):
                t = (i - start) / max(1, end - start - 1)
                z = 1.0 + (zoom - 1.0) * t
                cw, ch = width / z, height / z
                cx = (width - cw) / 2 + px * width * t
                cy = (height - ch) / 2 + py * height * t
                cx, cy = min(max(cx, 0), width - cw), min(max(cy, 0), height - ch)
                if i == 0:
                    frame = base
                elif i in black:
                    frame = Image.new("RGB", (width, height))
                elif i in frozen and i - 1 not in black:
                    pass  # the previous frame again
                else:
                    frame = frame_src.resize(
                        (width, height), Image.BILINEAR, box=(cx, cy, cx + cw, cy + ch)
                    )
                vf = av.VideoFrame.from_ndarray(np.asarray(frame), format="rgb24")
                for packet in stream.encode(vf):
                    container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
        if astream is not None:
            _mux_audio(container, astream, audio, seconds)
    return Clip(out.getvalue(), width, height, float(fps), n_frames, float(seconds))


def _segments(prompt: str, word: str, fps: int) -> set[int]:
    """Frames inside ``<word> [a-bs]`` directives of a prompt: the local server's way to
    render frozen (``Freeze``) or black (``Black``) stretches on request, for quality tests."""
    import re

    found: set[int] = set()
    for m in re.finditer(rf"{word}\s*\[\s*(\d+(?:\.\d+)?)\s*-\s*(\d+(?:\.\d+)?)\s*s\s*\]", prompt):
        found.update(range(int(float(m.group(1)) * fps), int(float(m.group(2)) * fps)))
    return found


def _add_audio(container: av.container.OutputContainer) -> av.audio.stream.AudioStream:
    astream = container.add_stream("aac", rate=44100)
    astream.layout = "stereo"
    return astream


def _mux_audio(container, astream, audio: bytes, seconds: int) -> None:
    """Cut the audio to the video's length; shorter audio leaves the rest silent."""
    resampler = av.AudioResampler(format="fltp", layout="stereo", rate=44100)
    limit = seconds * 44100
    written = 0
    with av.open(io.BytesIO(audio)) as src:
        for frame in src.decode(audio=0):
            for rs in resampler.resample(frame):
                if written >= limit:
                    break
                rs.pts = written
                rs.time_base = Fraction(1, 44100)
                written += rs.samples
                for packet in astream.encode(rs):
                    container.mux(packet)
    for packet in astream.encode():
        container.mux(packet)
