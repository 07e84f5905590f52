"""A labelled clip set: short H.264 clips whose cuts, freezes, black stretches, flicker and
first-frame drift are known, because they were drawn that way. It is what the quality
detectors are chosen and pinned on (tests/unit/test_labelled_clips.py, bench/detectors.py).

The hard cases are the point: cuts between shots of one low-texture scene seen from another
place (similar brightness, little to see change), cuts in the dark, cuts while the camera
moves, the local server's own multi-shot clips; and events that are *not* cuts: dissolves, fast
pans, zooms, flashes, freezes, fades to black, flicker. Every clip is seeded: the same seed
gives the same frames (the encoder is the local server's: libx264, ultrafast, crf 28).

``python -m tests.clipset OUT [--seeds 3]`` writes the clips and ``truth.json`` beside them.
"""

from __future__ import annotations

import argparse
import io
import json
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import av
import numpy as np
from PIL import Image
from scipy.ndimage import gaussian_filter

W, H, FPS = 256, 144, 16


@dataclass(frozen=True)
class Truth:
    """What a clip holds. ``cuts``: times (s) of the first frame of each new shot."""

    name: str
    kind: str
    seconds: float
    cuts: list[float] = field(default_factory=list)
    frozen_fraction: float = 0.0  # share of frame steps with no change
    black_fraction: float = 0.0  # share of black frames
    flicker: float = 0.0  # amplitude of the brightness jitter (0-1)
    hard: str = ""  # why this clip is hard, for the tables


@dataclass(frozen=True)
class Labelled:
    data: bytes  # the MP4
    truth: Truth


# ------------------------------------------------------------------------- scenes
def scene(
    rng: np.random.Generator, texture: float, brightness: float, scale: int = 2
) -> np.ndarray:
    """A smooth random RGB world ``scale`` times the frame in each direction, values 0-1:
    ``texture`` is its contrast (0.03: a wall, a sky; 0.25: foliage), ``brightness`` its mean."""
    h, w = H * scale, W * scale
    grey = sum(
        gaussian_filter(rng.standard_normal((h, w)), sigma) * weight
        for sigma, weight in ((24, 1.0), (8, 0.4), (3, 0.1))
    )
    grey = (grey - grey.mean()) / (grey.std() + 1e-9)
    tint = rng.uniform(0.7, 1.3, size=3)
    rgb = brightness * tint + texture * grey[..., None] * rng.uniform(0.8, 1.2, size=3)
    return np.clip(rgb, 0.0, 1.0)


def view(world: np.ndarray, x: float, y: float, zoom: float = 1.0) -> np.ndarray:
    """The frame a camera at (x, y) (fractions of the free room, 0-1) sees of a world;
    ``zoom`` above 1 sees a smaller part, scaled up."""
    ch, cw = int(round(H / zoom)), int(round(W / zoom))
    top = int(np.clip(y, 0, 1) * (world.shape[0] - ch))
    left = int(np.clip(x, 0, 1) * (world.shape[1] - cw))
    crop = world[top : top + ch, left : left + cw]
    if (ch, cw) == (H, W):
        return crop
    img = Image.fromarray((crop * 255).astype(np.uint8)).resize((W, H), Image.BILINEAR)
    return np.asarray(img, dtype=np.float32) / 255.0


def _path(
    rng: np.random.Generator, n: int, speed: float, room: int
) -> Iterator[tuple[float, float]]:
    """A camera drifting at ``speed`` (fraction of the free room per second), across at least
    one pixel a frame (``room``: the free room in pixels), so it never repeats a frame."""
    x, y = rng.uniform(0.2, 0.8, size=2)
    vx, vy = rng.choice([-1, 1], size=2) * speed * rng.uniform(0.6, 1.0, size=2) / FPS
    vx = float(np.sign(vx) * max(abs(vx), 1.05 / room))
    for _ in range(n):
        yield x, y
        x, y = x + vx, y + vy
        if not 0 <= x <= 1:
            vx, x = -vx, float(np.clip(x, 0, 1))
        if not 0 <= y <= 1:
            vy, y = -vy, float(np.clip(y, 0, 1))


def shot(world: np.ndarray, rng: np.random.Generator, n: int, speed: float = 0.08) -> list:
    return [view(world, x, y) for x, y in _path(rng, n, speed, world.shape[1] - W)]


# ------------------------------------------------------------------------- clips
Maker = Callable[[np.random.Generator], tuple[list[np.ndarray], Truth]]
KINDS: dict[str, Maker] = {}


def kind(fn: Maker) -> Maker:
    KINDS[fn.__name__] = fn
    return fn


def _shots(rng, worlds, seconds=4.0, speed=0.08) -> tuple[list[np.ndarray], list[float]]:
    """Frames of consecutive shots of the given worlds, cut at random times 0.8 s apart or more."""
    n = int(seconds * FPS)
    k = len(worlds)
    cuts = sorted(rng.choice(np.arange(13, n - 12), size=k - 1, replace=False))
    while any(b - a < 13 for a, b in zip(cuts, cuts[1:])):
        cuts = sorted(rng.choice(np.arange(13, n - 12), size=k - 1, replace=False))
    bounds = [0, *cuts, n]
    frames = []
    for world, a, b in zip(worlds, bounds, bounds[1:]):
        frames += shot(world, rng, b - a, speed)
    return frames, [float(c) / FPS for c in cuts]


@kind
def cut_textured(rng):
    worlds = [scene(rng, 0.22, rng.uniform(0.3, 0.6)) for _ in range(3)]
    frames, cuts = _shots(rng, worlds)
    return frames, Truth("", "cut_textured", 4.0, cuts, hard="easy: different textured scenes")


@kind
def cut_same_scene_low_texture(rng):
    """One plain scene (a wall, a sky) seen from three places: brightness and texture alike."""
    world = scene(rng, 0.035, rng.uniform(0.35, 0.6), scale=3)
    frames, cuts = _shots(rng, [world, world, world], speed=0.03)
    return frames, Truth(
        "", "cut_same_scene_low_texture", 4.0, cuts, hard="one low-texture scene, other angles"
    )


@kind
def cut_dark(rng):
    worlds = [scene(rng, 0.03, rng.uniform(0.06, 0.12)) for _ in range(3)]
    frames, cuts = _shots(rng, worlds)
    return frames, Truth("", "cut_dark", 4.0, cuts, hard="dark, low-texture scenes")


@kind
def cut_while_moving(rng):
    worlds = [scene(rng, 0.12, rng.uniform(0.3, 0.6)) for _ in range(2)]
    frames, cuts = _shots(rng, worlds, speed=0.5)
    return frames, Truth("", "cut_while_moving", 4.0, cuts, hard="both shots pan fast")


@kind
def dissolve(rng):
    a, b = (scene(rng, 0.15, rng.uniform(0.3, 0.6)) for _ in range(2))
    n, start, length = 64, int(rng.integers(16, 32)), int(rng.integers(8, 16))
    fa, fb = shot(a, rng, n), shot(b, rng, n)
    frames = []
    for i in range(n):
        w = float(np.clip((i - start) / length, 0, 1))
        frames.append((1 - w) * fa[i] + w * fb[i])
    return frames, Truth("", "dissolve", 4.0, hard=f"a {length}-frame cross-fade, not a cut")


@kind
def fast_pan(rng):
    world = scene(rng, 0.2, rng.uniform(0.3, 0.6), scale=4)
    frames = shot(world, rng, 64, speed=1.2)
    return frames, Truth("", "fast_pan", 4.0, hard="the camera sweeps: every frame changes a lot")


@kind
def zoom(rng):
    world = scene(rng, 0.2, rng.uniform(0.3, 0.6))
    x, y = rng.uniform(0.3, 0.7, size=2)
    frames = [view(world, x, y, zoom=1.0 + 0.9 * i / 63) for i in range(64)]
    return frames, Truth("", "zoom", 4.0, hard="a fast zoom, not a cut")


@kind
def flash(rng):
    world = scene(rng, 0.15, rng.uniform(0.25, 0.45))
    frames = shot(world, rng, 64)
    for start in (int(rng.integers(10, 28)), int(rng.integers(36, 54))):
        for i in range(start, start + int(rng.integers(1, 3))):
            frames[i] = np.clip(frames[i] + rng.uniform(0.3, 0.5), 0, 1)
    return frames, Truth("", "flash", 4.0, hard="1-2 frame flashes (lightning, a camera)")


@kind
def freeze(rng):
    world = scene(rng, 0.15, rng.uniform(0.3, 0.6))
    frames = shot(world, rng, 64, speed=0.15)
    start, length = int(rng.integers(8, 30)), int(rng.integers(12, 24))
    # the camera stops and later goes on from where it stopped (no jump)
    frames = frames[: start + 1] + [frames[start]] * (length - 1) + frames[start + 1 :]
    frames = frames[:64]
    return frames, Truth(
        "", "freeze", 4.0, frozen_fraction=round((length - 1) / 63, 4), hard="the picture stops"
    )


@kind
def fade_to_black(rng):
    world = scene(rng, 0.15, rng.uniform(0.3, 0.6))
    frames = shot(world, rng, 64)
    out_at, hold = int(rng.integers(10, 24)), int(rng.integers(10, 20))
    fade = 8
    for i in range(64):
        if out_at <= i < out_at + fade:
            frames[i] = frames[i] * (1 - (i - out_at + 1) / fade)
        elif out_at + fade <= i < out_at + fade + hold:
            frames[i] = frames[i] * 0
        elif out_at + fade + hold <= i < out_at + 2 * fade + hold:
            frames[i] = frames[i] * ((i - out_at - fade - hold + 1) / fade)
    black = hold + 1  # the last frame of the fade out is black too
    return frames, Truth(
        "", "fade_to_black", 4.0, black_fraction=round(black / 64, 4), hard="fades, not cuts"
    )


@kind
def flicker(rng):
    world = scene(rng, 0.15, rng.uniform(0.35, 0.55))
    frames = shot(world, rng, 64)
    amp = float(rng.uniform(0.02, 0.06))
    frames = [np.clip(f + amp * (1 if i % 2 else -1), 0, 1) for i, f in enumerate(frames)]
    return frames, Truth("", "flicker", 4.0, flicker=round(amp, 4), hard="brightness jitter")


def encode(frames: list[np.ndarray]) -> bytes:
    out = io.BytesIO()
    with av.open(out, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        # one thread: x264's output depends on its thread count, and the set must not
        stream.options = {"preset": "ultrafast", "crf": "28", "tune": "zerolatency", "threads": "1"}
        for f in frames:
            rgb = (np.clip(f, 0, 1) * 255 + 0.5).astype(np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return out.getvalue()


def server_multishot(seed: int) -> Labelled:
    """The local fal server's own multi-shot clip of a low-texture image: shots are the image,
    mirrored and flipped, so brightness hardly changes at a cut (the case issue 35 found)."""
    from wansweep.localfal.video import render_clip

    rng = np.random.default_rng(seed)
    world = scene(rng, 0.04, rng.uniform(0.35, 0.55))
    img = Image.fromarray((view(world, 0.3, 0.4) * 255).astype(np.uint8))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    prompt = "Shot 1 [0-3s] a field. Shot 2 [3-6s] closer. Shot 3 [6-9s] wider."
    clip = render_clip(
        buf.getvalue(),
        prompt=prompt,
        seed=seed,
        resolution=None,
        duration="9",
        multi_shots=True,
        short_side=H,
    )
    return Labelled(
        clip.data,
        Truth(
            f"server_multishot-{seed}",
            "server_multishot",
            9.0,
            [3.0, 6.0],
            hard="the local server's shots: mirrored low-texture image",
        ),
    )


def clips(seeds: range | list[int] = range(3)) -> list[Labelled]:
    """Every kind at every seed (seeded: the same list each time), and the server's clips."""
    out = []
    for seed in seeds:
        for name, make in KINDS.items():
            rng = np.random.default_rng([seed, list(KINDS).index(name)])
            frames, truth = make(rng)
            truth = Truth(**{**asdict(truth), "name": f"{name}-{seed}"})
            out.append(Labelled(encode(frames), truth))
        out.append(server_multishot(seed))
    return out


# ------------------------------------------------------------------------- first frames
DRIFTS = {
    # benign: what re-encoding or a faithful model does to a first frame (amount 0)
    "same": 0.0,
    "softer": 0.0,
    "brighter": 0.0,
    # drift: the content moved away from the input, by the given fraction
    "shift-2%": 0.02,
    "shift-5%": 0.05,
    "shift-15%": 0.15,
    "zoom-5%": 0.05,
    "zoom-30%": 0.30,
    "other-scene-25%": 0.25,
    "other-scene": 1.0,
}


def drifted(rng: np.random.Generator) -> Iterator[tuple[str, float, Image.Image, Image.Image]]:
    """(drift name, amount, input image, first frame) for each drift in :data:`DRIFTS`: the
    first frame is encoded and decoded like a real clip's."""
    world = scene(rng, float(rng.uniform(0.04, 0.25)), float(rng.uniform(0.2, 0.6)))
    other = scene(rng, float(rng.uniform(0.04, 0.25)), float(rng.uniform(0.2, 0.6)))
    x, y = rng.uniform(0.3, 0.7, size=2)
    base = view(world, x, y)
    for name, amount in DRIFTS.items():
        if name == "softer":
            first = gaussian_filter(base, (2.0, 2.0, 0))
        elif name == "brighter":
            first = base + 0.08
        elif name.startswith("shift"):
            first = view(world, x + amount, y)  # the free room of a 2x world is one frame wide
        elif name.startswith("zoom"):
            first = view(world, x, y, zoom=1 + amount)
        elif name.startswith("other"):
            first = (1 - amount) * base + amount * view(other, x, y)
        else:
            first = base
        data = encode([first] * 2)
        with av.open(io.BytesIO(data)) as c:
            frame = next(c.decode(video=0)).to_image()
        yield name, amount, Image.fromarray((np.clip(base, 0, 1) * 255).astype(np.uint8)), frame


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    truths = []
    for c in clips(range(args.seeds)):
        (args.out / f"{c.truth.name}.mp4").write_bytes(c.data)
        truths.append(asdict(c.truth))
    (args.out / "truth.json").write_text(json.dumps(truths, indent=1))
    print(f"{len(truths)} clips and truth.json in {args.out}")


if __name__ == "__main__":
    main()
