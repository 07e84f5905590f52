"""Sample inputs for rehearsals, tests and benchmarks: images and audio made on the spot."""

from __future__ import annotations

import base64
import io
import socket


def make_image(width=640, height=360, colour=(200, 60, 40), fmt="PNG", mode="RGB", seed=0) -> bytes:
    """A small picture with shapes (``seed`` moves them), encoded as ``fmt``."""
    from PIL import Image, ImageDraw

    img = Image.new(mode, (width, height), colour if mode == "RGB" else (*colour, 128))
    d = ImageDraw.Draw(img)
    d.ellipse((width // 4 + seed, height // 4, width // 2 + seed, height // 2), fill=(20, 200, 90))
    d.rectangle((width // 2, height // 2, width - 10, height - 10), fill=(30, 30, 220))
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


def data_uri(data: bytes, mime="image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def make_wav(seconds: float, rate: int = 16000) -> bytes:
    """A square-wave WAV of the given length."""
    import struct
    import wave

    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        n = int(seconds * rate)
        w.writeframes(
            b"".join(struct.pack("<h", int(8000 * ((i // 40) % 2 * 2 - 1))) for i in range(n))
        )
    return buf.getvalue()


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (for servers that must be told their port)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]
