"""No key leaves a store's root, whatever code built it (a webhook's request id, a row id):
every method of both stores refuses an escaping key before it touches a file or the bucket."""

from __future__ import annotations

from pathlib import Path

import pytest

from wansweep.errors import StoreError
from wansweep.store import LocalStore, S3Store

ESCAPING = [
    "/etc/passwd",
    "../outside",
    "jobs/../../outside",
    "markers/k/1-x/../../../jobs/k/meta.json",
    "jobs/./k/meta.json",
    "jobs//k",
    "jobs\\..\\k",
    "jobs/k\x00/meta.json",
    "jobs/k\n/meta.json",
    "",
    ".",
    "..",
]


class _Never(Exception):
    pass


class NoCalls:
    """An S3 client that fails the test if any call reaches it."""

    class exceptions:  # noqa: N801 (boto3's name) what ``except client.exceptions.X`` reads
        NoSuchKey = NoSuchBucket = ClientError = _Never

    def __getattr__(self, name):
        def call(*args, **kwargs):
            raise AssertionError(f"the S3 client was called ({name}) with an escaping key")

        return call


def stores(tmp_path: Path):
    return [LocalStore(tmp_path / "root"), S3Store("bucket", "prefix", client=NoCalls())]


CALLS = {
    "put_bytes": lambda s, k, f: s.put_bytes(k, b"x"),
    "put_file": lambda s, k, f: s.put_file(k, f),
    "put_verified": lambda s, k, f: s.put_verified(k, f, "0" * 64),
    "get_bytes": lambda s, k, f: s.get_bytes(k),
    "size": lambda s, k, f: s.size(k),
    "download_file": lambda s, k, f: s.download_file(k, f.with_suffix(".out")),
    "iter_chunks": lambda s, k, f: s.iter_chunks(k),
    "delete": lambda s, k, f: s.delete(k),
    "create_exclusive": lambda s, k, f: s.create_exclusive(k, b"x"),
    "read_versioned": lambda s, k, f: s.read_versioned(k),
    "replace_if": lambda s, k, f: s.replace_if(k, b"x", "v"),
    "exists": lambda s, k, f: s.exists(k),
}


@pytest.mark.parametrize("method", list(CALLS))
@pytest.mark.parametrize("key", ESCAPING, ids=repr)
def test_every_store_refuses_an_escaping_key(tmp_path, method, key):
    source = tmp_path / "file.bin"
    source.write_bytes(b"x")
    for store in stores(tmp_path):
        with pytest.raises(StoreError, match="refused"):
            CALLS[method](store, key, source)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.bin"]  # nothing written


@pytest.mark.parametrize("prefix", ["../", "/abs/", "jobs/../", "a\\b/"])
def test_listing_refuses_an_escaping_prefix(tmp_path, prefix):
    for store in stores(tmp_path):
        with pytest.raises(StoreError, match="refused"):
            list(store.list(prefix))


def test_ordinary_keys_and_prefixes_pass(tmp_path):
    store = LocalStore(tmp_path)
    store.put_bytes("markers/abc/1-0f8fad5b-d9cb-469f-a165-70867728950e", b"{}")
    assert list(store.list("markers/abc/1-")) and list(store.list("")) and list(store.list("mark"))
