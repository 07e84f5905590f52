"""Regenerate the quickstart images (small JPEGs, deterministic): python configs/quickstart/make_images.py"""

from pathlib import Path

from PIL import Image, ImageDraw

HERE = Path(__file__).parent


def scene(size, sky, ground, shapes, seed):
    img = Image.new("RGB", size, sky)
    d = ImageDraw.Draw(img)
    w, h = size
    for y in range(h // 2, h):
        t = (y - h // 2) / (h / 2)
        d.line([(0, y), (w, y)], fill=tuple(int(a + (b - a) * t) for a, b in zip(ground, sky)))
    for kind, box, colour in shapes:
        (d.ellipse if kind == "circle" else d.rectangle)(box, fill=colour)
    return img


if __name__ == "__main__":
    scene(
        (640, 360),
        (250, 170, 90),
        (20, 40, 90),
        [
            ("circle", (420, 60, 520, 160), (255, 230, 150)),
            ("rect", (80, 200, 300, 260), (40, 30, 30)),
        ],
        1,
    ).save(HERE / "harbour.jpg", quality=70)
    scene(
        (384, 512),
        (200, 200, 210),
        (90, 80, 70),
        [
            ("circle", (132, 120, 252, 260), (230, 190, 160)),
            ("rect", (112, 260, 272, 512), (60, 90, 140)),
        ],
        2,
    ).save(HERE / "portrait.jpg", quality=70)
    scene(
        (640, 400),
        (120, 170, 230),
        (40, 40, 50),
        [
            ("rect", (40, 120, 120, 400), (70, 70, 90)),
            ("rect", (150, 60, 230, 400), (90, 90, 110)),
            ("rect", (270, 160, 350, 400), (60, 60, 80)),
            ("rect", (400, 90, 480, 400), (100, 100, 120)),
        ],
        3,
    ).save(HERE / "city.jpg", quality=70)
