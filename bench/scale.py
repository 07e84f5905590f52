"""Issue 15: planning thousands of distinct images on S3 and on the web, side by side with a
bare loop that fetches, fully decodes and hashes the same objects at the same concurrency.

The servers run in their own processes (SeaweedFS or moto for S3; Python's HTTP server), so
the plan and the bare loop share this process's CPU alike.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import yaml
from harness import record, run_wansweep

WEB_SERVER = """
import functools, sys
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

class Handler(SimpleHTTPRequestHandler):
    def end_headers(self):
        self.send_header("Cache-Control", "max-age=86400")
        super().end_headers()

    def log_message(self, *args):
        pass

handler = functools.partial(Handler, directory=sys.argv[1])
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[2])), handler).serve_forever()
"""


def _wait_port(port: int, proc: subprocess.Popen) -> None:
    import socket

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listening on {port}")


def _images(n: int, seed: int = 0) -> list[bytes]:
    """n distinct JPEGs (each differs by its seed), 640x360."""
    from wansweep.localfal.samples import make_image

    return [
        make_image(640, 360, fmt="JPEG", seed=(seed + i) % 160) + i.to_bytes(4) for i in range(n)
    ]


def bare(uris: list[str], concurrency: int) -> float:
    """Fetch, fully decode and hash each object: what planning cannot do without."""
    import boto3  # noqa: F401 (loaded before timing, as the plan's is)
    import httpx
    from PIL import Image

    from wansweep.store import s3_client

    http = httpx.Client(limits=httpx.Limits(max_connections=64))

    def one(uri: str) -> str:
        if uri.startswith("s3://"):
            bucket, key = uri[5:].split("/", 1)
            data = s3_client().get_object(Bucket=bucket, Key=key)["Body"].read()
        else:
            data = http.get(uri).raise_for_status().content
        with Image.open(io.BytesIO(data)) as img:
            img.load()
        return hashlib.sha256(data).hexdigest()

    t = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, uris))
    http.close()
    return time.perf_counter() - t


def _plan(work: Path, manifest: str, store: str, trust: bool = False):
    from wansweep.plan.planner import plan
    from wansweep.plan.spec import load_spec
    from wansweep.store import open_store

    spec = work / "scale-spec.yaml"
    spec.write_text(
        yaml.safe_dump(
            {
                "name": "scale",
                "endpoints": ["flash"],
                "grid": {"resolution": ["720p"]},
                "trust_http_cache": trust,
            }
        )
    )
    cfg = load_spec(spec, store=store)
    t = time.perf_counter()
    result = plan(cfg, manifest, index_store=open_store(store))
    return time.perf_counter() - t, result


def _compare(label: str, work: Path, uris: list[str], manifest: str, store: str, change) -> None:
    from wansweep.plan.planner import PLAN_CONCURRENCY

    base = bare(uris, PLAN_CONCURRENCY)
    cold, cold_plan = _plan(work, manifest, store)
    assert cold_plan.media_fetched == len(uris) and not cold_plan.errors, cold_plan.errors[:3]
    record(
        f"7. cold plan, {len(uris)} distinct images on {label}",
        cold,
        "s",
        "ratio <= 1.5",
        baseline=base,
        note=f"baseline: bare fetch+decode+hash loop, {PLAN_CONCURRENCY} threads",
    )
    warm, warm_plan = _plan(work, manifest, store)
    record(
        f"7. warm re-plan, {len(uris)} images on {label}",
        warm,
        "s",
        "ratio <= 0.10, 0 downloads",
        baseline=cold,
        note=f"baseline: the cold plan; downloads: {warm_plan.media_fetched}",
    )
    change(10)
    _, changed = _plan(work, manifest, store)
    record(
        f"7. re-plan after changing 10 images on {label}",
        changed.media_fetched,
        "downloads",
        "exactly 10",
    )
    if label != "HTTP":
        return
    trusted, trusted_plan = _plan(work, manifest, store, trust=True)
    record(
        f"7. warm re-plan, {len(uris)} images on HTTP, trust_http_cache",
        trusted,
        "s",
        "ratio <= 0.10, 0 downloads",
        baseline=cold,
        note=f"baseline: the cold plan; downloads: {trusted_plan.media_fetched}; answers carry "
        "Cache-Control: max-age=86400, so no request at all",
    )


def bench_plan_scale(work: Path, n: int, s3_server: str = "seaweedfs") -> None:
    """Cold plan, warm re-plan and a re-plan after 10 changes, of n distinct images on S3
    (``s3_server``: SeaweedFS, a real S3 server, or moto's) and on the web."""
    images = _images(n)
    aws = ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")
    saved = {k: os.environ.get(k) for k in aws}
    try:
        with _s3(s3_server, work) as env:
            os.environ.update(env)
            from wansweep.store import s3_client

            s3 = s3_client()
            s3.create_bucket(Bucket="scale")
            with ThreadPoolExecutor(16) as pool:
                list(
                    pool.map(
                        lambda i: s3.put_object(Bucket="scale", Key=f"img/{i}.jpg", Body=images[i]),
                        range(n),
                    )
                )
            rows = "\n".join(f"r{i},img/{i}.jpg,prompt {i}" for i in range(n))
            s3.put_object(
                Bucket="scale", Key="manifest.csv", Body=f"id,image,prompt\n{rows}\n".encode()
            )
            uris = [f"s3://scale/img/{i}.jpg" for i in range(n)]

            def change_s3(k: int) -> None:
                for i, data in enumerate(_images(k, seed=77)):
                    s3.put_object(Bucket="scale", Key=f"img/{i}.jpg", Body=data)

            _compare(
                f"S3 ({s3_server})",
                work,
                uris,
                "s3://scale/manifest.csv",
                "s3://scale/archive",
                change_s3,
            )
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v

    site = work / "site"
    old = time.time() - 3600
    with _web_site(site, images, old) as uris:
        manifest = _web_manifest(work / "web.csv", uris)

        def change_web(k: int) -> None:
            for i, data in enumerate(_images(k, seed=77)):
                (site / f"{i}.jpg").write_bytes(data)
                os.utime(site / f"{i}.jpg", (old + 60, old + 60))

        _compare("HTTP", work, uris, str(manifest), str(work / "web-archive"), change_web)


@contextmanager
def _s3(kind: str, work: Path) -> Iterator[dict[str, str]]:
    """A local S3 server in its own process, the environment that reaches it. moto's lists a
    folder in O(bucket) per page (it sorts the whole bucket for each), SeaweedFS as S3 does."""
    if kind == "seaweedfs":
        from tests.helpers import seaweedfs_server

        folder = work / "seaweedfs"
        folder.mkdir(exist_ok=True)
        with seaweedfs_server(folder) as env:
            yield env
        return
    from wansweep.localfal.samples import free_port

    port = free_port()
    moto = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_port(port, moto)
        yield {
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
            "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
    finally:
        moto.terminate()
        moto.wait(30)


@contextmanager
def _web_site(site: Path, images: Iterable[bytes], dated: float) -> Iterator[list[str]]:
    """The images as ``site/<i>.jpg`` (modified at ``dated``) on Python's HTTP server
    (Last-Modified, no ETag; Cache-Control as a CDN in front of a dataset sends it), in its
    own process: yields their URLs."""
    from wansweep.localfal.samples import free_port

    site.mkdir(exist_ok=True)
    n = 0
    for data in images:
        (site / f"{n}.jpg").write_bytes(data)
        os.utime(site / f"{n}.jpg", (dated, dated))
        n += 1
    port = free_port()
    web = subprocess.Popen(
        [sys.executable, "-c", WEB_SERVER, str(site), str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_port(port, web)
        os.environ["WANSWEEP_ALLOW_HOSTS"] = "127.0.0.1"
        yield [f"http://127.0.0.1:{port}/{i}.jpg" for i in range(n)]
    finally:
        web.terminate()
        web.wait(30)


def _web_manifest(path: Path, uris: list[str]) -> Path:
    path.write_text(
        "id,image,prompt\n" + "\n".join(f"r{i},{u},prompt {i}" for i, u in enumerate(uris))
    )
    return path


def bench_plan_memory(work: Path, n: int) -> None:
    """`wansweep plan` of n rows naming n distinct images on the web, cold, as a user runs
    it: its peak RSS (the opt-in 100,000 of issue 15)."""
    from wansweep.localfal.samples import make_image

    # 160 encodings, each made distinct by 4 trailing bytes (decoders ignore them; the
    # content hash, job key and every cache see a different image)
    bases = [make_image(640, 360, fmt="JPEG", seed=k) for k in range(160)]
    images = (bases[i % 160] + i.to_bytes(4) for i in range(n))
    with _web_site(work / "site-memory", images, time.time() - 3600) as uris:
        manifest = _web_manifest(work / "memory.csv", uris)
        spec = work / "memory-spec.yaml"
        spec.write_text(
            yaml.safe_dump(
                {"name": "memory", "endpoints": ["flash"], "grid": {"resolution": ["720p"]}}
            )
        )
        wall, rss, out = run_wansweep(
            ["plan", str(spec), "--manifest", str(manifest), "--store", str(work / "m-archive")],
            {},
            cwd=work,
        )
    inputs = re.search(r"inputs: (\d+) downloaded", out)
    record(
        f"7. peak RSS, cold plan of {n} rows, {n} distinct images on HTTP",
        rss,
        "MB",
        "<= 1024",
        note=f"{wall:.1f} s; inputs downloaded and checked: {inputs.group(1) if inputs else '?'}",
    )
