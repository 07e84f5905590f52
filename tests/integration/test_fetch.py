"""Bounded reads of web inputs against real local servers: size, time, redirects and private addresses, including a name that rebinds between the check and the connect."""

from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer, ThreadingHTTPServer

import pytest
import yaml

from wansweep.plan.planner import plan
from wansweep.plan.spec import load_spec


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
