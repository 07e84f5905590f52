"""Starting the local fal-compatible server: in this process (CLI) or as a child process.

The contract for scripts: once the server is ready to serve, it writes the client
environment as KEY=VALUE lines to the env file (written atomically, so a reader
that sees the file sees all of it).
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

LOCAL_KEY = "local-dev-key:not-a-secret"


def default_state_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "wansweep" / "localfal"


def client_env(host: str, port: int, bundle: Path, key: str | None) -> dict[str, str]:
    netloc = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return {
        "FAL_KEY": key or LOCAL_KEY,
        "FAL_RUN_HOST": netloc,
        "FAL_QUEUE_RUN_HOST": netloc,
        "SSL_CERT_FILE": str(bundle),
        "WANSWEEP_FAL_API_URL": f"https://{netloc}/v1",
        "WANSWEEP_FAL_OPENAPI_URL": f"https://{netloc}/api/openapi/queue/openapi.json",
        "WANSWEEP_FAL_JWKS_URL": f"https://{netloc}/.well-known/jwks.json",
        "WANSWEEP_LOCAL_FAL": f"https://{netloc}",
    }


def write_env_file(path: Path, env: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    tmp.replace(path)


def read_env_file(path: Path) -> dict[str, str]:
    env = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.startswith("#"):
            env[key.strip()] = value.strip()
    return env


def serve(
    host: str,
    port: int,
    env_file: Path | None,
    config: Any,
    state_dir: Path,
    media_dir: Path | None = None,
    announce: bool = True,
) -> None:
    """Run the server in the foreground until interrupted."""
    import uvicorn

    from wansweep.localfal.server import LocalFal
    from wansweep.localfal.tls import ensure_tls

    hosts = tuple(sorted({host, "127.0.0.1", "localhost", "::1"}))
    tls = ensure_tls(state_dir, hosts)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    port = sock.getsockname()[1]
    fal = LocalFal(config, media_dir or state_dir / "media", ssl_bundle=str(tls.bundle))
    server = uvicorn.Server(
        uvicorn.Config(
            fal.app,
            ssl_keyfile=str(tls.server_key),
            ssl_certfile=str(tls.server_cert),
            log_level="warning",
            lifespan="off",
            timeout_keep_alive=30,
            backlog=2048,
            date_header=False,  # the app sets Date on its own (shiftable) clock
        )
    )
    env = client_env(host, port, tls.bundle, config.key)

    def announce_ready() -> None:
        while not server.started and not server.should_exit:
            time.sleep(0.01)
        if env_file is not None:
            write_env_file(env_file, env)
        if announce:
            print(f"local fal-compatible server ready at https://{env['FAL_RUN_HOST']}", flush=True)
            print("point any fal-client script at it with:", flush=True)
            for k, v in env.items():
                print(f"  export {k}={v}", flush=True)

    threading.Thread(target=announce_ready, daemon=True).start()
    server.run(sockets=[sock])


@dataclass
class LocalFalProcess:
    """A `wansweep fal-server` child process and the environment its clients need."""

    proc: subprocess.Popen
    env: dict[str, str]
    workdir: Path

    @property
    def url(self) -> str:
        return self.env["WANSWEEP_LOCAL_FAL"]

    def _client(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.url,
            verify=ssl.create_default_context(cafile=self.env["SSL_CERT_FILE"]),
            timeout=30,
            headers={"Authorization": f"Key {self.env['FAL_KEY']}"},
        )

    def stats(self) -> dict[str, Any]:
        with self._client() as c:
            return c.get("/_local/stats").raise_for_status().json()

    def requests(self) -> dict[str, dict[str, Any]]:
        """The server's own record of each request (sent, started, ended; its clock), by id."""
        with self._client() as c:
            rows = c.get("/_local/requests").raise_for_status().json()
        return {r["request_id"]: r for r in rows}

    def reset(self) -> None:
        with self._client() as c:
            c.post("/_local/reset").raise_for_status()

    def expire_media(self) -> int:
        """Delete every generated video (a CDN past its retention); returns how many."""
        with self._client() as c:
            return c.post("/_local/expire-media").raise_for_status().json()["removed"]

    def signed_webhook(
        self, request_id: str, body: dict, timestamp: float | None = None
    ) -> tuple[dict[str, str], bytes]:
        """Headers and body of a webhook this server signs, as it would send it."""
        asked = {"request_id": request_id, "body": body, "timestamp": timestamp}
        with self._client() as c:
            answer = c.post("/_local/sign-webhook", json=asked).raise_for_status().json()
        return answer["headers"], answer["content"].encode()

    def configure(self, **changes: Any) -> None:
        with self._client() as c:
            c.post("/_local/config", content=json.dumps(changes)).raise_for_status()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> LocalFalProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_local_fal(
    *,
    latency: str = "zero",
    faults: str = "",
    concurrency: int = 10,
    media: str = "full",
    listing: str = "documented",
    key: str | None = None,
    workdir: Path | None = None,
    state_dir: Path | None = None,
    timeout: float = 60.0,
) -> LocalFalProcess:
    """Start `wansweep fal-server` on a free loopback port and wait until it serves."""
    workdir = Path(workdir or tempfile.mkdtemp(prefix="wansweep-fal-"))
    workdir.mkdir(parents=True, exist_ok=True)
    env_file = workdir / "fal.env"
    env_file.unlink(missing_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "wansweep.cli",
        "fal-server",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--env-file",
        str(env_file),
        "--latency",
        latency,
        "--concurrency",
        str(concurrency),
        "--media",
        media,
        "--listing",
        listing,
        "--media-dir",
        str(workdir / "media"),
        "--quiet",
    ]
    if faults:
        cmd += ["--faults", faults]
    if key:
        cmd += ["--key", key]
    if state_dir:
        cmd += ["--state-dir", str(state_dir)]
    log = (workdir / "server.log").open("wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout
    while not env_file.exists():
        if proc.poll() is not None:
            raise RuntimeError(
                f"local fal server exited with {proc.returncode}:\n"
                + (workdir / "server.log").read_text()[-3000:]
            )
        if time.monotonic() > deadline:
            proc.kill()
            raise TimeoutError(f"local fal server did not start within {timeout:.0f} s")
        time.sleep(0.05)
    return LocalFalProcess(proc, read_env_file(env_file), workdir)
