"""Bounded reads of media: every image or audio a manifest names is read through here.

- http(s): at most ``MAX_BYTES`` (checked against ``Content-Length`` before reading, and while
  reading), a total deadline, at most ``MAX_REDIRECTS`` redirects, and never to a loopback,
  private or link-local address (cloud metadata services live there) unless the user allows
  it (``WANSWEEP_ALLOW_HOSTS=host,...``; ``WANSWEEP_ALLOW_PRIVATE_URLS=1`` for all) or it is
  the local fal server's own address. The address is checked where the connection is made:
  a name is resolved once per connection, every address it resolves to is checked, and the
  connection goes to one of those addresses (a name that answers a public address to a check
  and a private one to the connect, DNS rebinding, reaches nothing private; and a keep-alive
  connection costs no lookup per request). Through a proxy (``HTTP(S)_PROXY``/``ALL_PROXY``
  set) the proxy resolves names: the name is then checked before each request, a weaker
  guard, and the proxy's own rules are the real one.
- local paths: regular files only (no FIFO, device or directory), at most ``MAX_BYTES``.
One shared HTTP client per process.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import stat
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import httpcore
import httpx

from wansweep.errors import InputError

MAX_BYTES = 32 * 2**20  # above fal's own 25 MB (image) and 15 MB (audio) limits
DEADLINE_S = 60.0
MAX_REDIRECTS = 5

_client: httpx.Client | None = None
_proxied = False  # the client goes through the environment's proxy: names checked per request
_lock = threading.Lock()


class FetchRefused(InputError):
    """A media URL or path that is not read (too large, too slow, where it may not go)."""


def _http() -> httpx.Client:
    global _client, _proxied
    with _lock:
        if _client is None:
            from wansweep import __version__

            limits = httpx.Limits(max_connections=64, max_keepalive_connections=32)
            # httpx uses the environment's proxies only without a transport of our own
            _proxied = any(urllib.request.getproxies().get(s) for s in ("http", "https", "all"))
            _client = httpx.Client(
                headers={"User-Agent": f"wansweep/{__version__}"},
                timeout=httpx.Timeout(30.0, connect=10.0),
                follow_redirects=False,  # each hop is checked below
                limits=limits,
                transport=None if _proxied else _CheckedTransport(limits),
            )
        return _client


def _user_allows(host: str) -> bool:
    if os.environ.get("WANSWEEP_ALLOW_PRIVATE_URLS") == "1":
        return True
    allowed = {h.strip() for h in os.environ.get("WANSWEEP_ALLOW_HOSTS", "").split(",")}
    if host in allowed:
        return True
    local = os.environ.get("WANSWEEP_LOCAL_FAL")
    return bool(local) and urlsplit(local).hostname == host  # it serves its own files


def _forbidden(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_reserved
        or address.is_multicast
        or address.is_unspecified
    )


def checked_addresses(host: str, port: int) -> list[str]:
    """The addresses a connection to ``host`` may go to, from one lookup: every one public,
    else FetchRefused naming the host and the address (all of them are checked: which one a
    connection would take is not ours to know). A host the user allows is returned as it is,
    for the usual lookup."""
    if _user_allows(host):
        return [host]
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise FetchRefused(f"cannot resolve {host}: {exc}") from None
    addresses = list(dict.fromkeys(info[4][0] for info in infos))
    for text in addresses:
        address = ipaddress.ip_address(text.split("%", 1)[0])  # an IPv6 zone is not an address
        if _forbidden(address):
            raise FetchRefused(
                f"{host} resolves to {address}, a private, loopback or link-local address; "
                f"allow it with WANSWEEP_ALLOW_HOSTS={host} (or every such address with "
                "WANSWEEP_ALLOW_PRIVATE_URLS=1)"
            )
    return addresses


class _CheckedBackend(httpcore.SyncBackend):
    """Direct connections only to addresses :func:`checked_addresses` allowed, tried in the
    resolver's order (as ``socket.create_connection`` does). TLS still names the host: the
    certificate is checked against it, not against the address."""

    def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        error: Exception | None = None
        for address in checked_addresses(host, port):
            try:
                return super().connect_tcp(address, port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc
        raise error or httpcore.ConnectError(f"{host}: no address to connect to")


class _CheckedTransport(httpx.HTTPTransport):
    """httpx's own transport over a pool whose connections are made by :class:`_CheckedBackend`
    (httpx has no argument for a network backend; its pool is replaced whole, with the same
    settings httpx gives it; a test checks that connections really go through the check)."""

    def __init__(self, limits: httpx.Limits) -> None:
        super().__init__(limits=limits)
        if not isinstance(getattr(self, "_pool", None), httpcore.ConnectionPool):
            # fail closed: an httpx that keeps its pool elsewhere would connect unchecked
            raise RuntimeError(f"httpx {httpx.__version__}: no pool to check connections in")
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=_CheckedBackend(),
        )


@contextmanager
def _follow(method: str, url: str) -> Iterator[httpx.Response]:
    """The final answer to ``method url`` (streamed), every hop checked: http(s) only, an
    allowed host, at most ``MAX_REDIRECTS`` redirects."""
    for _ in range(MAX_REDIRECTS + 1):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise FetchRefused(f"{url}: only http(s) URLs are fetched")
        client = _http()
        if _proxied:
            checked_addresses(parts.hostname, parts.port or 0)
        with client.stream(method, url) as response:
            if not response.is_redirect:
                yield response
                return
            url = urljoin(url, response.headers.get("location", ""))
    raise FetchRefused(f"{url}: more than {MAX_REDIRECTS} redirects")


def fetch_url(url: str, limit: int = MAX_BYTES) -> tuple[bytes, httpx.Headers]:
    """The body of an http(s) URL within the bounds above, and the headers that came with
    it. 404 -> FileNotFoundError."""
    deadline = time.monotonic() + DEADLINE_S
    with _follow("GET", url) as response:
        if response.status_code == 404:
            raise FileNotFoundError(url)
        if response.status_code != 200:
            raise FetchRefused(f"{url}: answered {response.status_code}")
        declared = response.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise FetchRefused(f"{url}: {int(declared)} bytes, over the {limit} byte limit")
        chunks, size = [], 0
        for chunk in response.iter_bytes(1 << 16):
            size += len(chunk)
            if size > limit:
                raise FetchRefused(f"{url}: over the {limit} byte limit")
            if time.monotonic() > deadline:
                raise FetchRefused(f"{url}: not read within {DEADLINE_S:.0f} s")
            chunks.append(chunk)
        return b"".join(chunks), response.headers


def head_url(url: str) -> httpx.Headers | None:
    """The headers of an http(s) URL's HEAD answer, within the same checks as
    :func:`fetch_url` (None when it answers anything but 200: the caller then fetches)."""
    with _follow("HEAD", url) as response:
        # a HEAD answer has no body, but reading its end is what lets httpx keep the
        # connection for the next request (unread, it is closed: a TCP connect per HEAD)
        response.read()
        return response.headers if response.status_code == 200 else None


def read_local(path: str | Path, limit: int = MAX_BYTES) -> bytes:
    """A local regular file of at most ``limit`` bytes."""
    path = Path(path)
    info = path.stat()  # FileNotFoundError as it is
    if not stat.S_ISREG(info.st_mode):
        raise FetchRefused(f"{path} is not a regular file")
    if info.st_size > limit:
        raise FetchRefused(f"{path}: {info.st_size} bytes, over the {limit} byte limit")
    with path.open("rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise FetchRefused(f"{path}: over the {limit} byte limit")
    return data
