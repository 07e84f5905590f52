"""Bounded reads of inputs: regular local files within a size cap; no name that resolves anywhere private, checked on the address connected to (or before each request through a proxy)."""

from __future__ import annotations

import pytest

from wansweep.media import fetch
from wansweep.media.fetch import FetchRefused, checked_addresses, read_local


def test_local_reads_are_regular_files_with_a_size_cap(tmp_path):
    import os

    with pytest.raises(FetchRefused, match="not a regular file"):
        read_local("/dev/zero")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(FetchRefused, match="not a regular file"):
        read_local(fifo)
    big = tmp_path / "big.png"
    big.write_bytes(b"0" * 2048)
    with pytest.raises(FetchRefused, match="limit"):
        read_local(big, limit=1024)


def _resolver(table):
    def getaddrinfo(host, port, *args, **kwargs):
        if host not in table:
            raise OSError(f"unknown host {host}")
        return [(2, 1, 6, "", (address, port)) for address in table[host]]

    return getaddrinfo


@pytest.mark.parametrize(
    "addresses",
    [
        ["127.0.0.1"],
        ["10.1.2.3"],
        ["169.254.169.254"],  # a cloud's metadata service
        ["93.184.216.34", "192.168.0.7"],  # one private among public ones is enough
        ["::1"],
        ["fe80::1%eth0"],
        ["::ffff:127.0.0.1"],
        ["0.0.0.0"],
    ],
)
def test_a_name_resolving_anywhere_private_is_refused(monkeypatch, addresses):
    monkeypatch.delenv("WANSWEEP_ALLOW_HOSTS", raising=False)
    monkeypatch.delenv("WANSWEEP_ALLOW_PRIVATE_URLS", raising=False)
    monkeypatch.delenv("WANSWEEP_LOCAL_FAL", raising=False)
    monkeypatch.setattr(fetch.socket, "getaddrinfo", _resolver({"media.example": addresses}))
    with pytest.raises(FetchRefused, match="media.example resolves to .*WANSWEEP_ALLOW_HOSTS"):
        checked_addresses("media.example", 443)


def test_public_addresses_are_what_a_connection_may_use(monkeypatch):
    monkeypatch.delenv("WANSWEEP_ALLOW_HOSTS", raising=False)
    monkeypatch.delenv("WANSWEEP_ALLOW_PRIVATE_URLS", raising=False)
    table = {"media.example": ["93.184.216.34", "2606:2800:220:1::1", "93.184.216.34"]}
    monkeypatch.setattr(fetch.socket, "getaddrinfo", _resolver(table))
    assert checked_addresses("media.example", 443) == ["93.184.216.34", "2606:2800:220:1::1"]
    with pytest.raises(FetchRefused, match="cannot resolve nowhere.example"):
        checked_addresses("nowhere.example", 443)
    # a host the user allows is not looked up here: the connection resolves it as usual
    monkeypatch.setenv("WANSWEEP_ALLOW_HOSTS", "intranet.example")
    assert checked_addresses("intranet.example", 80) == ["intranet.example"]


def test_through_a_proxy_names_are_still_checked_before_each_request(monkeypatch):
    """With a proxy in the environment the proxy resolves names, so the connection cannot be
    checked here: the name is checked before each request instead (the proxy below does not
    exist, so reaching it would fail otherwise than with FetchRefused)."""
    for name in ("WANSWEEP_ALLOW_HOSTS", "WANSWEEP_ALLOW_PRIVATE_URLS", "WANSWEEP_LOCAL_FAL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.invalid:3128")
    monkeypatch.setattr(fetch.socket, "getaddrinfo", _resolver({"media.example": ["10.0.0.7"]}))
    monkeypatch.setattr(fetch, "_client", None)  # restored, with _proxied, after the test
    monkeypatch.setattr(fetch, "_proxied", False)
    try:
        with pytest.raises(FetchRefused, match="media.example resolves to 10.0.0.7"):
            fetch.fetch_url("http://media.example/a.png")
        assert fetch._proxied
    finally:
        fetch._http().close()
