"""Hostile and careless input against the real local servers: secrets in fal's errors, the
local server's doors, unbounded fetches, markup in names, fal's own long example prompt, and
the webhook receiver's limits."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer, ThreadingHTTPServer

import boto3
import fal_client
import httpx
import pandas as pd
import pytest
import yaml

from flows.sweep import sweep
from tests.fal_examples import FAL_EXAMPLE_PROMPT
from tests.helpers import make_image, write_case
from wansweep.plan import schema
from wansweep.plan.manifest import plan
from wansweep.plan.spec import load_spec
from wansweep.run.ledger import Ledger
from wansweep.store import open_store

FLASH = schema.ENDPOINTS[1]


def test_a_presigned_url_in_fals_error_reaches_no_ledger_report_or_log(
    fal, prefect_harness, tmp_path, bucket, caplog
):
    s3 = boto3.client("s3")
    s3.put_object(Bucket=bucket, Key="in/a.png", Body=make_image())
    s3.put_object(Bucket=bucket, Key="in/m.csv", Body=b"id,image,prompt\nr1,a.png,private\n")
    fal.configure(faults="fetch_fail=1.0")  # fal's error quotes the URL it could not fetch
    spec = write_case(
        tmp_path,
        rows=0,
        manifest=f"s3://{bucket}/in/m.csv",
        endpoints=["flash"],
        grid={"resolution": ["720p"]},
        seeds=[1],
    )
    result = sweep(str(spec))
    assert result["outcomes"] == {"failed": 1}
    store = open_store(load_spec(spec).store)
    entry = next(iter(Ledger(store).all().values()))
    report = pd.read_csv(result["report"]["jobs_csv"])
    parquet = pd.read_parquet(result["report"]["jobs_parquet"])
    texts = {
        "ledger": json.dumps(entry.to_json()),
        "csv": report.to_csv(),
        "parquet": parquet.to_csv(),
        "log": caplog.text,
    }
    assert "Failed to download" in texts["ledger"]  # the error is there, readable
    for where, text in texts.items():
        for secret in ("X-Amz-Signature", "X-Amz-Credential", "test:", "AKIA"):
            assert secret not in text, (where, secret)


def test_the_local_server_serves_no_file_outside_its_folder(fal):
    secret = fal.workdir / "state" / "secret.txt"
    secret.parent.mkdir(exist_ok=True)
    secret.write_text("top secret")
    for name in ("../../state/secret.txt", "..%2F..%2Fstate%2Fsecret.txt", "../../../etc/passwd"):
        url = f"{fal.url}/_local/files/{name}"
        handle = fal_client.submit(FLASH, arguments={"prompt": "p", "image_url": url})
        with pytest.raises(fal_client.client.FalClientHTTPError) as err:
            handle.get(interval=0.05)
        assert err.value.status_code == 422
        text = str(err.value.response.text)
        assert "top secret" not in text and str(fal.workdir) not in text and "root:" not in text


def test_with_a_key_every_route_wants_it(tmp_path):
    from wansweep.localfal.runner import start_local_fal

    with start_local_fal(workdir=tmp_path, key="only-this-key") as server:
        import ssl

        trust = ssl.create_default_context(cafile=server.env["SSL_CERT_FILE"])
        plain = httpx.Client(verify=trust, base_url=server.url)
        for method, path in (
            ("GET", "/_local/stats"),
            ("POST", "/_local/reset"),
            ("POST", "/_local/config"),
            ("GET", "/_local/files/x.png"),
            ("GET", "/v1/models/requests/by-endpoint"),
        ):
            assert plain.request(method, path).status_code == 401, path
        assert server.stats()["submits_accepted"] == 0  # with the key: fine


class _Evil(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        if self.path == "/huge.png":
            self.send_response(200)
            self.send_header("Content-Length", str(2**30))
            self.end_headers()
        elif self.path == "/drip.png":
            self.send_response(200)
            self.end_headers()
            for _ in range(50):
                self.wfile.write(b"x" * 64)
                self.wfile.flush()
                threading.Event().wait(0.1)
        else:  # to the cloud metadata service
            self.send_response(302)
            self.send_header("Location", "http://169.254.169.254/latest/meta-data/")
            self.end_headers()

    def log_message(self, *args):
        pass


def test_unbounded_or_forbidden_image_urls_are_refused_at_plan(tmp_path, monkeypatch):
    from wansweep.media import fetch

    server = HTTPServer(("127.0.0.1", 0), _Evil)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setenv("WANSWEEP_ALLOW_HOSTS", "127.0.0.1")  # this test's own server only
    monkeypatch.setattr(fetch, "DEADLINE_S", 2.0)
    (tmp_path / "m.csv").write_text(
        f"id,image,prompt\nhuge,{base}/huge.png,a\nmeta,{base}/to-metadata,b\n"
        f"drip,{base}/drip.png,c\nloop,http://localhost:1/x.png,d\n"
    )
    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump({"name": "s", "manifest": "m.csv", "endpoints": ["flash"]}))
    cfg = load_spec(spec)
    problems = {p.id: p for p in plan(cfg, cfg.manifest).errors}
    server.shutdown()
    assert set(problems) == {"huge", "meta", "drip", "loop"}
    assert "over the" in problems["huge"].msg and "limit" in problems["huge"].msg
    assert "169.254.169.254" in problems["meta"].msg
    assert "not read within" in problems["drip"].msg
    assert "loopback" in problems["loop"].msg or "private" in problems["loop"].msg
    assert all(p.field == "image" for p in problems.values())


class _Site(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keeps connections, as web servers do
    body = b"public"

    def do_GET(self):  # noqa: N802
        self.server.hits += 1
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args):
        pass


def _site(address: str, port: int, body: bytes) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer((address, port), type("Site", (_Site,), {"body": body}))
    server.hits = 0
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_a_name_that_rebinds_to_a_private_address_reaches_nothing_private(monkeypatch):
    """DNS rebinding: a name answers a public address when it is checked and a private one
    when the connection is made. The connection must go where the check looked. Here
    127.0.0.1 plays a public address and 127.0.0.2 the private one (the only addresses a
    test can serve on); the HTTP and the connections are real."""
    from wansweep.media import fetch

    public = _site("127.0.0.1", 0, b"public")
    port = public.server_address[1]
    private = _site("127.0.0.2", port, b"private")
    real = socket.getaddrinfo
    lookups = []

    def rebinding(host, *args, **kwargs):
        if host != "media.example":
            return real(host, *args, **kwargs)
        lookups.append(host)
        address = "127.0.0.1" if len(lookups) == 1 else "127.0.0.2"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    monkeypatch.setattr(fetch, "_forbidden", lambda address: str(address) == "127.0.0.2")
    for name in ("WANSWEEP_ALLOW_HOSTS", "WANSWEEP_ALLOW_PRIVATE_URLS", "WANSWEEP_LOCAL_FAL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(fetch, "_client", None)  # a client of this test's own
    try:
        bodies = {fetch.fetch_url(f"http://media.example:{port}/{i}.png")[0] for i in range(20)}
        assert bodies == {b"public"}
        assert (public.hits, private.hits) == (20, 0)
        # one lookup for the connection, none per request: a keep-alive connection is reused
        assert len(lookups) == 1
        # a new connection looks again, and this time the name is private: refused
        fetch._http().close()
        monkeypatch.setattr(fetch, "_client", None)
        with pytest.raises(fetch.FetchRefused, match="media.example resolves to 127.0.0.2"):
            fetch.fetch_url(f"http://media.example:{port}/again.png")
        assert private.hits == 0
    finally:
        fetch._http().close()
        public.shutdown()
        private.shutdown()


def test_markup_in_a_row_id_is_shown_verbatim(tmp_path):
    (tmp_path / "i.png").write_bytes(make_image())
    (tmp_path / "m.csv").write_text(
        "id,image,prompt,duration\n[/red],i.png,a,7\n[link=x]y,i.png,b,5\n"
    )
    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump({"name": "s", "manifest": "m.csv", "endpoints": ["flash"]}))
    out = subprocess.run(
        [sys.executable, "-m", "wansweep.cli", "plan", str(spec), "--store", str(tmp_path / "a")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2, out.stdout + out.stderr
    assert "row 1 (id [/red]): duration" in out.stdout and "Traceback" not in out.stderr


def test_report_refuses_a_sweep_name_that_leaves_the_archive(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "wansweep.cli", "report", str(tmp_path), "--sweep", "../../x"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2 and "lowercase letters" in out.stdout
    assert not (tmp_path.parent.parent / "x").exists()


def test_fals_own_example_prompt_plans_and_runs(fal, prefect_harness, tmp_path):
    (tmp_path / "i.png").write_bytes(make_image())
    pd.DataFrame([{"id": "fal", "image": "i.png", "prompt": FAL_EXAMPLE_PROMPT}]).to_csv(
        tmp_path / "m.csv", index=False
    )
    spec = write_case(
        tmp_path,
        rows=0,
        manifest=str(tmp_path / "m.csv"),
        endpoints=["flash"],
        grid={"resolution": ["720p"]},
        seeds=[1],
    )
    assert sweep(str(spec))["outcomes"] == {"archived": 1}


def test_the_webhook_receiver_has_limits():
    from wansweep.fal.webhooks import WebhookReceiver

    receiver = WebhookReceiver("http://127.0.0.1:0/hook")
    port = int(receiver.address.rsplit(":", 1)[1])
    assert port not in (0, 80)
    url = f"http://127.0.0.1:{port}/hook"
    raw = socket.create_connection(("127.0.0.1", port))
    raw.sendall(b"POST /hook HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n{}")
    assert raw.recv(64).startswith(b"HTTP/1.0 400")  # an answer, not a traceback
    raw.close()
    assert httpx.post(url, json={"request_id": "x" * 10_000}).status_code == 400
    big = json.dumps({"request_id": "r", "pad": "x" * (2 << 20)})
    assert httpx.post(url, content=big).status_code == 413
    idle = socket.create_connection(("127.0.0.1", port))
    idle.settimeout(30)
    assert idle.recv(1) == b""  # an idle connection is closed, not held forever
    assert httpx.post(url, json={"request_id": "ok"}).status_code == 200
    receiver.close()
