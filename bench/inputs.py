"""Planning memory against input size (issue 36), each case in its own process, peak RSS from
the kernel (ru_maxrss of the child):

- ``grid``: a 10^9-job grid (1,000 rows x 1,000 negative prompts x 1,000 seeds) refused;
- ``pngs``: 32 distinct 7680x7680 16-bit RGBA PNGs planned, against the old way side by side
  (every image fully decoded, 16 threads at once).

    python bench/inputs.py [--images 32]
"""

from __future__ import annotations

import argparse
import json
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

SIDE = 7680


def png16(path: Path, seed: int) -> None:
    """A legal 16-bit RGBA PNG of SIDE x SIDE, distinct by its first row, written streaming."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    row_bytes = SIDE * 8
    first = b"\0" + bytes((seed * 7 + i) % 256 for i in range(row_bytes))
    zero = b"\0" * (row_bytes + 1)
    comp = zlib.compressobj(6)
    parts = [comp.compress(first)]
    for _ in range(SIDE - 1):
        parts.append(comp.compress(zero))
    parts.append(comp.flush())
    header = struct.pack(">IIBBBBB", SIDE, SIDE, 16, 6, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", b"".join(parts))
        + chunk(b"IEND", b"")
    )


CHILD = r"""
import json, resource, sys, time
t0 = time.perf_counter()
case, folder = sys.argv[1], sys.argv[2]
if case == "plan":
    from wansweep.plan.planner import plan
    from wansweep.plan.spec import load_spec
    spec = load_spec(folder + "/spec.yaml")
    result = plan(spec, spec.manifest)
    out = {"jobs": len(result.jobs), "errors": len(result.errors)}
elif case == "decode-all":
    from concurrent.futures import ThreadPoolExecutor
    from pathlib import Path
    from PIL import Image
    Image.MAX_IMAGE_PIXELS = None
    def load(p):
        with Image.open(p) as img:
            img.load()
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(load, sorted(Path(folder).glob("*.png"))))
    out = {}
else:  # grid
    from wansweep.errors import PlanInvalid
    from wansweep.plan.planner import plan
    from wansweep.plan.spec import load_spec
    try:
        plan(load_spec(folder + "/spec.yaml"), folder + "/m.csv")
        out = {"refused": False}
    except PlanInvalid as exc:
        out = {"refused": True, "message": str(exc)[:120]}
out.update(seconds=round(time.perf_counter() - t0, 2),
           peak_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1))
print(json.dumps(out))
"""


def child(case: str, folder: Path) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, case, str(folder)], capture_output=True, text=True
    )
    if out.returncode:
        raise SystemExit(out.stderr)
    return json.loads(out.stdout.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=32)
    args = parser.parse_args()
    import yaml

    results = {}
    with tempfile.TemporaryDirectory(prefix="wansweep-bench-inputs-") as tmp:
        folder = Path(tmp)
        (folder / "m.csv").write_text(
            "image,prompt\n" + "".join(f"i{i}.png,p{i}\n" for i in range(1000))
        )
        spec = {
            "name": "grid",
            "endpoints": ["flash"],
            "grid": {"negative_prompt": [f"n{i}" for i in range(1000)]},
            "seeds": {"range": [0, 1000]},
        }
        (folder / "spec.yaml").write_text(yaml.safe_dump(spec))
        results["grid_1e9_refused"] = child("grid", folder)

    with tempfile.TemporaryDirectory(prefix="wansweep-bench-pngs-") as tmp:
        folder = Path(tmp)
        t0 = time.perf_counter()
        for i in range(args.images):
            png16(folder / f"big{i}.png", i)
        made = time.perf_counter() - t0
        size = sum(p.stat().st_size for p in folder.glob("*.png"))
        (folder / "m.csv").write_text(
            "image,prompt\n" + "".join(f"big{i}.png,p{i}\n" for i in range(args.images))
        )
        spec = {"name": "pngs", "manifest": "m.csv", "endpoints": ["flash"]}
        (folder / "spec.yaml").write_text(yaml.safe_dump(spec))
        results["pngs"] = {
            "images": args.images,
            "file_mb": round(size / 2**20, 1),
            "made_s": round(made, 1),
            "plan": child("plan", folder),
            "baseline_decode_all_16_threads": child("decode-all", folder),
        }
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
