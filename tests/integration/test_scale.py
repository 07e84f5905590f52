"""Planning real datasets: inputs on S3 (a real local S3 server) and on the web (a local HTTP
server), checked once and then vouched for by the media index until they change."""

from __future__ import annotations

import functools
import http.server
import logging
import os
import threading
from collections import Counter
from dataclasses import dataclass

import boto3
import pytest
import yaml
from prefect import flow, task
from prefect.context import FlowRunContext

from flows.fanout import fan_out, quiet_task_successes
from tests.helpers import make_image
from wansweep.plan.planner import plan
from wansweep.plan.spec import load_spec
from wansweep.store import open_store
from wansweep.store.layout import archived_keys


def spec_file(tmp_path, store: str):
    path = tmp_path / "spec.yaml"
    path.write_text(
        yaml.safe_dump({"name": "scale", "endpoints": ["flash"], "grid": {"resolution": ["720p"]}})
    )
    return load_spec(path, store=store)


def replan(cfg, manifest: str):
    return plan(cfg, manifest, index_store=open_store(cfg.store))


def keys_by_row(p):
    return {j.row_id: j.job_key for j in p.jobs}


def test_s3_inputs_are_listed_not_downloaded_once_checked(tmp_path, bucket):
    s3 = boto3.client("s3")
    lines = ["id,image,prompt"]
    for i in range(25):  # one folder: validators come from one listing
        s3.put_object(Bucket=bucket, Key=f"d/img/{i}.png", Body=make_image(256, 256, seed=i))
        lines.append(f"a{i},img/{i}.png,prompt {i}")
    for i in range(3):  # a few in another folder: a HEAD each
        s3.put_object(Bucket=bucket, Key=f"d/few/{i}.png", Body=make_image(256, 256, seed=50 + i))
        lines.append(f"b{i},few/{i}.png,other {i}")
    s3.put_object(Bucket=bucket, Key="d/manifest.csv", Body="\n".join(lines).encode())
    manifest = f"s3://{bucket}/d/manifest.csv"
    cfg = spec_file(tmp_path, f"s3://{bucket}/archive")

    cold = replan(cfg, manifest)
    assert (cold.media_fetched, cold.media_reused, len(cold.jobs)) == (28, 0, 28)
    warm = replan(cfg, manifest)
    assert (warm.media_fetched, warm.media_reused) == (0, 28)
    assert keys_by_row(warm) == keys_by_row(cold)

    s3.put_object(Bucket=bucket, Key="d/img/7.png", Body=make_image(256, 256, seed=700))
    s3.put_object(Bucket=bucket, Key="d/few/1.png", Body=make_image(256, 256, seed=701))
    changed = replan(cfg, manifest)
    assert (changed.media_fetched, changed.media_reused) == (2, 26)
    before, after = keys_by_row(cold), keys_by_row(changed)
    assert {r for r in before if before[r] != after[r]} == {"a7", "b1"}


def test_a_big_folder_is_listed_in_ranges_at_once_and_only_up_to_the_last_wanted_key(
    bucket, monkeypatch
):
    from concurrent.futures import ThreadPoolExecutor

    from wansweep.plan import media_index

    s3 = boto3.client("s3")
    for i in range(60):  # wanted, interleaved with objects no manifest names, and some after
        s3.put_object(Bucket=bucket, Key=f"big/{i:03d}.png", Body=b"x" * (i + 1))
        s3.put_object(Bucket=bucket, Key=f"big/{i:03d}b.png", Body=b"other")
    for i in range(60, 150):
        s3.put_object(Bucket=bucket, Key=f"big/{i:03d}.png", Body=b"after")
    wanted = [f"s3://{bucket}/big/{i:03d}.png" for i in range(60)]
    wanted.append(f"s3://{bucket}/big/059x.png")  # named, but not there
    monkeypatch.setattr(media_index, "PAGE", 5)  # pages of 5 keys: 6 ranges of several pages
    listed = []
    client = media_index.s3_client()
    client.meta.events.register(
        "before-parameter-build.s3.ListObjectsV2",
        lambda params, **_: listed.append(params),
        unique_id="t",
    )
    try:
        with ThreadPoolExecutor(16) as pool:
            found = media_index._listed(bucket, "big/", wanted, pool)
    finally:
        client.meta.events.unregister("before-parameter-build.s3.ListObjectsV2", unique_id="t")
    assert found == {u: media_index._validator(u) for u in wanted}  # as a HEAD each says
    assert found[wanted[-1]] is None and all(found[u] for u in wanted[:-1])
    starts = {p.get("StartAfter") for p in listed}
    assert len(starts) == 6  # the ranges were listed apart
    # each range stops at its last wanted key: 120 keys in pages of 5, and a page more per
    # range at most; the 90 keys after the last wanted one are not listed (42 pages in all)
    assert len(listed) <= 120 // 5 + 6


def test_s3_keys_are_read_whole_with_hash_question_mark_and_space(tmp_path, bucket):
    """``#``, ``?`` and spaces are part of an S3 key: planned, listed, HEADed and presigned as
    that key, never as the object a URL parser would cut it to."""
    import hashlib

    from tests.helpers import fetch
    from wansweep.store import presign

    s3 = boto3.client("s3")
    odd = {"many": ["shot#%d.png", "take?%d.png", "a b %d.png"], "few": ["x#%d.png"]}
    lines, truth = ["id,image,prompt"], {}
    for folder, names in odd.items():
        count = 8 if folder == "many" else 1  # 24 in one folder: listed; 1: a HEAD
        for name in names:
            for i in range(count):
                key = f"d/{folder}/{name % i}"
                data = make_image(256, 256, seed=len(truth))
                s3.put_object(Bucket=bucket, Key=key, Body=data)
                truth[f"r{len(truth)}"] = (key, hashlib.sha256(data).hexdigest())
                lines.append(f"r{len(truth) - 1},{key.removeprefix('d/')},p")
    for decoy in ("d/many/shot", "d/many/take", "d/few/x"):  # where a URL parser would look
        s3.put_object(Bucket=bucket, Key=decoy, Body=make_image(256, 256, seed=999))
    s3.put_object(Bucket=bucket, Key="d/m.csv", Body="\n".join(lines).encode())
    cfg = spec_file(tmp_path, f"s3://{bucket}/archive")

    for expected_fetches in (25, 0):  # cold, then warm (every validator found)
        p = replan(cfg, f"s3://{bucket}/d/m.csv")
        assert not p.errors and p.media_fetched == expected_fetches
        assert {j.row_id: j.image_sha256 for j in p.jobs} == {r: t[1] for r, t in truth.items()}
    job = next(j for j in p.jobs if "#" in j.image_uri)
    assert hashlib.sha256(fetch(presign(job.image_uri))).hexdigest() == job.image_sha256


@dataclass
class Site:
    """A folder on a local web server (HTTP/1.1, keep-alive): ``ours`` counts (method, path)
    of wansweep's requests, ``connections`` the TCP connections opened to it; ``headers``
    are added to every answer."""

    root: object
    base: str
    ours: Counter
    connections: list
    headers: dict


@pytest.fixture
def site(tmp_path, monkeypatch):
    root = tmp_path / "site"
    root.mkdir()
    web = Site(root, "", Counter(), [], {})

    class Handler(http.server.SimpleHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self):
            web.connections.append(self.client_address)
            super().setup()

        def log_message(self, *args):
            pass

        def end_headers(self):
            for name, value in web.headers.items():
                self.send_header(name, value)
            super().end_headers()

        def send_head(self):
            if self.headers.get("User-Agent", "").startswith("wansweep/"):
                web.ours[(self.command, self.path)] += 1
            return super().send_head()

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Handler, directory=str(root))
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("WANSWEEP_ALLOW_HOSTS", "127.0.0.1")
    web.base = f"http://127.0.0.1:{server.server_address[1]}"
    yield web
    server.shutdown()


def write_old(path, data, hours_ago=1.0):
    path.write_bytes(data)
    t = path.stat().st_mtime - hours_ago * 3600
    os.utime(path, (t, t))


def test_web_inputs_are_checked_with_a_head_once_checked(tmp_path, site):
    root, base = site.root, site.base
    lines = ["id,image,prompt"]
    for i in range(6):
        write_old(root / f"{i}.png", make_image(256, 256, seed=i))
        lines.append(f"w{i},{base}/{i}.png,prompt {i}")
    (root / "fresh.png").write_bytes(make_image(256, 256, seed=99))  # modified just now
    lines.append(f"f,{base}/fresh.png,fresh")
    (tmp_path / "m.csv").write_text("\n".join(lines) + "\n")
    cfg = spec_file(tmp_path, str(tmp_path / "archive"))
    manifest = str(tmp_path / "m.csv")

    cold = replan(cfg, manifest)
    assert cold.media_fetched == 7 and not cold.errors
    warm = replan(cfg, manifest)
    # a Last-Modified under 60 s old does not prove the bytes (RFC 9110): fetched again
    assert (warm.media_fetched, warm.media_reused) == (1, 6)

    write_old(root / "4.png", make_image(256, 256, seed=400), hours_ago=0.5)
    changed = replan(cfg, manifest)
    assert changed.media_fetched == 2
    before, after = keys_by_row(cold), keys_by_row(changed)
    assert {r for r in before if before[r] != after[r]} == {"w4"}


def web_case(tmp_path, site, n: int, **spec):
    lines = ["id,image,prompt"]
    for i in range(n):
        write_old(site.root / f"{i}.png", make_image(256, 256, seed=i))
        lines.append(f"w{i},{site.base}/{i}.png,prompt {i}")
    (tmp_path / "m.csv").write_text("\n".join(lines) + "\n")
    path = tmp_path / "spec.yaml"
    path.write_text(
        yaml.safe_dump(
            {"name": "web", "endpoints": ["flash"], "grid": {"resolution": ["720p"]}, **spec}
        )
    )
    return load_spec(path, store=str(tmp_path / "archive")), str(tmp_path / "m.csv")


def test_heads_share_connections(tmp_path, site):
    from wansweep.plan.planner import PLAN_CONCURRENCY

    cfg, manifest = web_case(tmp_path, site, 3 * PLAN_CONCURRENCY)
    assert replan(cfg, manifest).media_fetched == 3 * PLAN_CONCURRENCY
    site.connections.clear()
    warm = replan(cfg, manifest)
    assert warm.media_reused == 3 * PLAN_CONCURRENCY
    assert sum(1 for (method, _), n in site.ours.items() if method == "HEAD") == warm.media_reused
    # a connection per HEAD would be a TCP handshake (and a TLS one on the web) per input
    assert len(site.connections) <= PLAN_CONCURRENCY


def test_a_fresh_answer_is_trusted_without_a_request_only_when_asked(tmp_path, site):
    site.headers["Cache-Control"] = "max-age=3600"
    cfg, manifest = web_case(tmp_path, site, 5, trust_http_cache=True)
    cold = replan(cfg, manifest)
    assert (cold.media_fetched, len(cold.jobs), cold.errors) == (5, 5, [])
    asked = sum(site.ours.values())
    warm = replan(cfg, manifest)
    assert (warm.media_fetched, warm.media_reused) == (0, 5)
    assert sum(site.ours.values()) == asked  # not even a HEAD
    # the promise is the origin's: a file changed within its max-age is not seen (why it is
    # opt-in), and keeps its old job key
    write_old(site.root / "2.png", make_image(256, 256, seed=200), hours_ago=0.5)
    assert keys_by_row(replan(cfg, manifest)) == keys_by_row(cold)

    # without trust_http_cache the same answers are checked with a HEAD each, and the change
    # is seen
    untrusting = cfg.model_copy(update={"trust_http_cache": False})
    checked = replan(untrusting, manifest)
    assert (checked.media_fetched, checked.media_reused) == (1, 4)
    before, after = keys_by_row(cold), keys_by_row(checked)
    assert {r for r in before if before[r] != after[r]} == {"w2"}


@pytest.mark.parametrize("cache_control", ["no-cache, max-age=3600", "max-age=0"])
def test_an_answer_that_is_not_fresh_is_checked_with_a_head(tmp_path, site, cache_control):
    site.headers["Cache-Control"] = cache_control
    cfg, manifest = web_case(tmp_path, site, 3, trust_http_cache=True)
    replan(cfg, manifest)
    site.ours.clear()
    warm = replan(cfg, manifest)
    assert (warm.media_fetched, warm.media_reused) == (0, 3)
    assert sorted(method for method, _ in site.ours.elements()) == ["HEAD"] * 3


class S3Proxy:
    """Between boto3 and the S3 server: counts the bytes of videos read back, and can make
    the store refuse one upload (BadDigest) and misreport one upload's checksum."""

    def __init__(self, upstream: str, refuse: int = 0, misreport: int = 0):
        import http.client
        from urllib.parse import urlsplit

        self.refuse, self.misreport, self.video_bytes_read = refuse, misreport, 0
        up = urlsplit(upstream)
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _forward(self):
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                video = "video.mp4" in self.path
                if video and self.command == "PUT" and proxy.refuse:
                    proxy.refuse -= 1
                    return self._answer(400, b"<Error><Code>BadDigest</Code></Error>", {})
                conn = http.client.HTTPConnection(up.hostname, up.port, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                headers["Host"] = up.netloc
                conn.request(self.command, self.path, body=body, headers=headers)
                answer = conn.getresponse()
                data = answer.read()
                out = {k: v for k, v in answer.getheaders() if k.lower() != "transfer-encoding"}
                if video and self.command == "GET":
                    proxy.video_bytes_read += len(data)
                if video and self.command == "HEAD" and proxy.misreport:
                    for k in out:
                        if k.lower() == "x-amz-checksum-sha256":
                            proxy.misreport -= 1
                            out[k] = "A" * 43 + "="
                self._answer(answer.status, data, out)

            def _answer(self, status, data, headers):
                self.send_response_only(status)  # the upstream's own Date and Server
                for k, v in headers.items():
                    if k.lower() != "content-length":
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _forward

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


def test_videos_are_archived_without_reading_them_back_and_a_refused_upload_is_retried(
    fal, prefect_harness, tmp_path, bucket, s3_server, monkeypatch
):
    from tests.helpers import accepted_per_job, run_sweep, write_case

    proxy = S3Proxy(s3_server["AWS_ENDPOINT_URL"], refuse=1, misreport=1)
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
    fal.configure(media="tiny")
    spec = write_case(
        tmp_path,
        rows=2,
        endpoints=["flash"],
        grid={"resolution": ["720p"]},
        store=f"s3://{bucket}/archive",
    )
    result = run_sweep(str(spec))
    # the retried uploads resume their jobs from the ledger (fal's result is kept there)
    assert sum(result["outcomes"].values()) == 4 and result["failed"] == 0
    assert result["outcomes"].get("resumed", 0) >= 1
    assert proxy.refuse == 0 and proxy.misreport == 0  # both faults happened
    assert proxy.video_bytes_read == 0  # no archived video was read back
    assert set(accepted_per_job(fal, spec).values()) == {1}  # a retried upload pays nothing
    store = open_store(f"s3://{bucket}/archive")
    assert len(archived_keys(store)) == 4
    for key in archived_keys(store):
        meta = store.get_json(f"jobs/{key}/meta.json")
        assert store.sha256(f"jobs/{key}/video.mp4") == meta["video"]["sha256"]


def test_a_run_reads_each_web_input_once(fal, prefect_harness, tmp_path, site):
    """Planning reads each image; the submit passes its URL to fal, and the first-frame check
    uses the reference planning kept: one read per input for the whole run."""
    from tests.helpers import run_sweep, write_case

    root, base, ours = site.root, site.base, site.ours
    spec = write_case(tmp_path, rows=2, endpoints=["flash"], grid={"resolution": ["720p"]})
    for i in range(2):  # the case's images, served from the web instead
        write_old(root / f"img{i}.png", (tmp_path / f"img{i}.png").read_bytes())
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(manifest.read_text().replace(",img", f",{base}/img"))
    result = run_sweep(str(spec))
    assert result["outcomes"] == {"archived": 4}  # 2 images x 2 seeds
    assert ours == {("GET", "/img0.png"): 1, ("GET", "/img1.png"): 1}
    store = open_store(str(tmp_path / "archive"))
    for key in archived_keys(store):
        assert store.get_json(f"jobs/{key}/meta.json")["first_frame_similarity"] > 0.9


@dataclass
class Done:
    n: int
    label: str


@task(persist_result=False)
def trivial(n: int) -> Done:
    return Done(n, f"job {n}")


def test_fan_out_forgets_each_counted_run(prefect_harness):
    """Prefect keeps a state per task result and a cancel event per task for the whole flow
    run; fan_out drops them as it counts, so 100,000 jobs fit in one process. Checked against
    the installed Prefect: if its bookkeeping moves, this fails instead of memory growing."""
    seen: list[int] = []
    kept: list[int] = []

    @flow
    def many(total: int) -> None:
        context = FlowRunContext.get()

        def on_result(result: Done) -> None:
            seen.append(result.n)
            kept.append(max(len(context.run_results), len(context.task_run_assets)))

        fan_out(trivial, (({"n": n}, ()) for n in range(total)), workers=4, on_result=on_result)

    many(300)
    assert sorted(seen) == list(range(300))
    # each result and its fields (n, label) are linked: at most the window's 24 results
    # are remembered at once, never the run's 300 (900 links without fan_out's release)
    assert max(kept) <= 3 * (2 * 4 + 16)


@task(persist_result=False, retries=1, retry_delay_seconds=0)
def odd_fails(n: int) -> int:
    if n % 2:
        raise ValueError(f"job {n} failed")
    return n


def test_only_task_successes_are_not_logged_a_line_each(prefect_harness):
    """A line per finished job is 10,000 lines for a 10,000-job sweep; failures and retries
    stay. The installed Prefect's own messages: if they change, this fails."""
    lines: list[tuple[int, str]] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append((record.levelno, record.getMessage()))

    @flow
    def some() -> None:
        with quiet_task_successes():
            fan_out(
                odd_fails, (({"n": n}, ()) for n in range(4)), workers=2, on_result=lambda r: None
            )
        odd_fails(0)  # outside: logged as usual

    logger = logging.getLogger("prefect.task_runs")
    saved, keep = logger.level, Keep(logging.DEBUG)
    logger.setLevel(logging.INFO)  # as a user's run logs (the suite runs at WARNING)
    logger.addHandler(keep)
    try:
        some()
    finally:
        logger.removeHandler(keep)
        logger.setLevel(saved)
    finished = [(level, text) for level, text in lines if text.startswith("Finished in state")]
    assert [text for level, text in finished if level == logging.INFO] == [
        "Finished in state Completed()"  # the one outside
    ]
    assert sum(1 for level, text in finished if level == logging.ERROR) == 2  # jobs 1 and 3
    assert sum(1 for level, text in lines if "Retry 1/1" in text) == 2
