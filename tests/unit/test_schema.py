"""Input images as fal would meet them: damaged, animated, bombs and very large ones are named
by the rule they break, decoded within a pixel budget, and Pillow's warnings become problems."""

from __future__ import annotations

import io
import struct
import threading
import warnings
import zlib

import pytest
from PIL import Image

from wansweep.plan.schema import DecodeBudget, check_image


def encoded(fmt: str, size=(640, 360), frames: int = 1, **kw) -> bytes:
    images = [Image.new("RGB", size, (i * 8 % 256, 40, 90)) for i in range(frames)]
    out = io.BytesIO()
    extra = {"save_all": True, "append_images": images[1:]} if frames > 1 else {}
    images[0].save(out, fmt, **extra, **kw)
    return out.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A small PNG whose header claims the given size (what a decompression bomb is)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 1000))
    return b"\x89PNG\r\n\x1a\n" + body + chunk(b"IEND", b"")


def rules(data: bytes) -> list[str]:
    return [p.rule for p in check_image(data)[1]]


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "BMP"])
def test_a_damaged_or_cut_image_is_refused_whatever_its_format(fmt):
    data = encoded(fmt)
    assert rules(data) == []
    for cut in (len(data) // 2, len(data) - 20):
        assert rules(data[:cut]) in (["image_truncated"], ["image_unreadable"]), cut
    if fmt == "PNG":  # a flipped byte breaks a chunk's CRC, without a pixel decoded
        flipped = bytearray(data)
        flipped[len(data) // 2] ^= 0xFF
        assert rules(bytes(flipped)) == ["image_truncated"]


def test_a_decompression_bomb_is_named_as_one_not_as_not_an_image():
    (problem,) = check_image(png_claiming(30000, 30000))[1]
    assert problem.rule == "image_dimensions" and "900,000,000 pixels" in problem.msg
    assert "decompression bomb" in problem.msg
    # beyond fal's largest but below Pillow's bomb limit: its sides are named instead
    assert rules(png_claiming(10000, 10000)) == ["image_dimensions", "image_dimensions"]


@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
def test_an_animated_image_is_a_warning_that_fal_takes_the_first_frame(fmt):
    info, problems = check_image(encoded(fmt, frames=12))
    assert info.frames > 1
    assert [(p.rule, p.severity) for p in problems] == [("image_animated", "warning")]
    assert f"({info.frames} frames); fal takes its first frame only" in problems[0].msg


def test_a_damaged_exif_block_is_a_warning_and_nothing_is_printed():
    exif = Image.Exif()
    exif[0x010F] = "camera"
    data = bytearray(encoded("JPEG", exif=exif.tobytes()))
    at = data.find(b"Exif\x00\x00") + 14
    data[at : at + 12] = b"\xff" * 12
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning escaping check_image would raise here
        info, problems = check_image(bytes(data))
    assert info is not None
    assert [(p.rule, p.severity) for p in problems] == [("image_metadata", "warning")]
    assert "Corrupt EXIF data" in problems[0].msg and "site-packages" not in problems[0].msg


def test_the_decode_budget_holds_pixels_in_flight_never_files_in_flight():
    budget = DecodeBudget(100)
    inside, peak, lock = [], [0], threading.Condition()
    release = threading.Event()

    def decode(pixels):
        with budget.hold(pixels):
            with lock:
                inside.append(pixels)
                peak[0] = max(peak[0], budget.used)
                lock.notify_all()
            release.wait(10)

    threads = [threading.Thread(target=decode, args=(40,)) for _ in range(5)]
    threads.append(threading.Thread(target=decode, args=(10_000,)))  # larger than all: alone
    for t in threads:
        t.start()
    with lock:
        assert lock.wait_for(lambda: len(inside) >= 2, timeout=10)
        assert budget.used <= 100 and len(inside) <= 2
    release.set()
    for t in threads:
        t.join(10)
    assert sorted(inside) == [40] * 5 + [10_000] and peak[0] <= 100 and budget.used == 0
