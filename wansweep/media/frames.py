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


REFERENCE_SIZE = 64


def reference(image: Image.Image) -> np.ndarray:
    """The small grey copy of an image that first-frame fidelity compares (4 KB)."""
    small = image.convert("L").resize((REFERENCE_SIZE, REFERENCE_SIZE), Image.BILINEAR)
    return np.asarray(small, dtype=np.uint8)


def reference_of(data: bytes) -> np.ndarray:
    """:func:`reference` of encoded image bytes (a JPEG is decoded at reduced size). Memory
    freed by a large decode goes back to the system before this returns."""
    with Image.open(io.BytesIO(data)) as img:
        img.draft("RGB", (REFERENCE_SIZE * 2, REFERENCE_SIZE * 2))
        large = img.width * img.height >= _LARGE_DECODE
        try:
            return reference(img)
        finally:
            if large:
                img.close()
                give_back_memory()


_LARGE_DECODE = 4 * 2**20  # pixels: a 16 MB decode, the most glibc may keep per thread


def give_back_memory() -> None:
    """Return freed heap to the system (glibc's ``malloc_trim``; elsewhere nothing). Why:
    glibc serves a freed 16 MB block's size from a per-thread heap from then on and keeps
    it, so 16 planning threads each decoding one 8K PNG in turn held 3.7 GB at the end
    although one decode at a time needs 0.3 GB (bench/inputs.py)."""
    global _TRIM
    if _TRIM is None:
        import ctypes
        import ctypes.util

        try:
            _TRIM = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
        except (OSError, AttributeError):  # not glibc
            _TRIM = False
    if _TRIM:
        _TRIM(0)


_TRIM = None


def similarity(a: Image.Image | np.ndarray, b: Image.Image) -> float:
    """:func:`ssim` of the small grey copies: 1.0 identical, ~0 unrelated. ``a`` may be a
    :func:`reference` already made. Chosen over 1 - mean absolute difference on the labelled
    first frames (tests/clipset.py, bench/detectors.py): a faithful frame made brighter or
    softer by the model or the encoder scores above a drifted one (AUC 1.0 against 0.74)."""
    x = a if isinstance(a, np.ndarray) else reference(a)
    return round(ssim(x, reference(b)), 4)


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean structural similarity of two grey images of one size, 0-255 (Wang et al. 2004: a
    Gaussian window of sigma 1.5 cut at 11 taps, K1 0.01, K2 0.03)."""
    from scipy.ndimage import gaussian_filter

    x, y = a.astype(np.float64), b.astype(np.float64)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2

    def blur(z: np.ndarray) -> np.ndarray:
        return gaussian_filter(z, 1.5, truncate=3.5)

    mx, my = blur(x), blur(y)
    sxx, syy, sxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return float(s.mean())


class References:
    """Thread-safe: the :func:`reference` of recent input images by content hash, so a run
    compares every job's first frame without reading its input again. Planning fills it
    as it checks each image; bounded (least recently used dropped), and a miss only means
    one more read of that input."""

    def __init__(self, size: int = 8192):
        import collections
        import threading

        self._items: collections.OrderedDict[str, np.ndarray] = collections.OrderedDict()
        self._size, self._lock = size, threading.Lock()

    def get(self, sha256: str) -> np.ndarray | None:
        with self._lock:
            found = self._items.get(sha256)
            if found is not None:
                self._items.move_to_end(sha256)
            return found

    def put(self, sha256: str, ref: np.ndarray) -> None:
        with self._lock:
            self._items[sha256] = ref
            self._items.move_to_end(sha256)
            while len(self._items) > self._size:
                self._items.popitem(last=False)


REFERENCES = References()  # one per process
