"""Issue 17: what measuring quality costs per video, beside the archive work it joins."""

from __future__ import annotations

import time
from pathlib import Path

from harness import record


def bench_quality(work: Path, repeats: int) -> None:
    from wansweep.localfal.samples import make_image
    from wansweep.localfal.video import render_clip
    from wansweep.media import frames as media
    from wansweep.media import quality

    clip = render_clip(
        make_image(1280, 720), prompt="a pan", seed=1, resolution="720p", duration="5"
    )
    path = work / "q.mp4"
    path.write_bytes(clip.data)
    asked = quality.Asked(5.0, 720, False, "a pan", False)

    def before() -> None:  # the archive step's decoding before metrics: probe + 3 frames
        media.probe(path)
        first, middle, last = media.frames_at(path, (0.0, 0.5, 1.0))
        media.thumbnail_jpeg(first)
        media.strip_jpeg([first, middle, last])

    def after() -> None:  # the same, with every metric, from one decode
        probe = media.probe(path)
        decoded = quality.decode(path)
        media.thumbnail_jpeg(decoded.picks[0])
        media.strip_jpeg(decoded.picks)
        quality.measure(quality.Clip(decoded, asked, probe, 0.99))

    timings = {}
    for name, fn in (("before", before), ("after", after)):
        fn()  # warm
        t = time.process_time()
        for _ in range(repeats):
            fn()
        timings[name] = (time.process_time() - t) / repeats
    record(
        "9. archive decode + quality metrics, 720p 5 s clip (CPU per video)",
        timings["after"],
        "s",
        "a fraction of a job's archive cost",
        baseline=timings["before"],
        note=f"baseline: the archive step's decode without metrics ({clip.num_frames} frames)",
    )
