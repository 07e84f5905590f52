"""The generic parts of every store (wansweep.store.base), on a local folder and on a store
that ignores conditional creates as some S3-compatible servers do."""

from __future__ import annotations

import hashlib

import pytest

from wansweep.errors import StoreError, StoreMismatch
from wansweep.store import LocalStore


class Careless(LocalStore):
    """A store whose conditional create always succeeds (If-None-Match: * ignored)."""

    def create_exclusive(self, key: str, data: bytes) -> str | bool:
        self.put_bytes(key, data)
        return "v"


class Lossy(LocalStore):
    """A store that keeps other bytes than it was sent (and no checksum check of its own)."""

    def put_verified(self, key, path, sha256, content_type=None):
        return super(LocalStore, self).put_verified(key, path, sha256, content_type)

    def put_file(self, key, path, content_type=None):
        self.put_bytes(key, path.read_bytes()[:-1])


def test_a_store_that_honours_conditional_creates_passes_and_leaves_no_probe(tmp_path):
    store = LocalStore(tmp_path)
    store.check_conditional_writes("leases/.probe-1")
    assert not store.exists("leases/.probe-1")


def test_a_store_that_ignores_them_is_refused_before_any_run(tmp_path):
    store = Careless(tmp_path)
    with pytest.raises(StoreError, match="does not honour conditional writes"):
        store.check_conditional_writes("leases/.probe-2")
    assert not store.exists("leases/.probe-2")  # removed however it ends


def test_a_copy_that_differs_is_removed_and_named(tmp_path):
    source = tmp_path / "v.mp4"
    source.write_bytes(b"video bytes")
    sha = hashlib.sha256(b"video bytes").hexdigest()
    store = Lossy(tmp_path / "archive")
    with pytest.raises(StoreMismatch, match="checksum differs"):
        store.put_verified("jobs/a/video.mp4", source, sha)
    assert not store.exists("jobs/a/video.mp4")
    good = LocalStore(tmp_path / "archive")
    good.put_verified("jobs/a/video.mp4", source, sha)
    assert good.sha256("jobs/a/video.mp4") == sha and good.exists("jobs/a/video.mp4")
    assert good.fetch_matches("jobs/a/video.mp4", tmp_path / "back.mp4", sha)
    assert not good.fetch_matches("jobs/a/video.mp4", tmp_path / "back.mp4", "0" * 64)


def test_a_range_is_cut_from_the_chunks_inclusive_of_its_end(tmp_path):
    store = LocalStore(tmp_path)
    store.put_bytes("k", bytes(range(100)))
    generic = b"".join(super(LocalStore, store).iter_range("k", 10, 19))
    assert generic == bytes(range(10, 20))
    assert b"".join(super(LocalStore, store).iter_range("k", 95, 200)) == bytes(range(95, 100))


def test_json_round_trips_and_a_missing_key_is_none(tmp_path):
    store = LocalStore(tmp_path)
    store.put_json("a/b.json", {"x": 1, "when": 2.5})
    assert store.get_json("a/b.json") == {"x": 1, "when": 2.5}
    assert store.get_json("a/none.json") is None and store.sha256("a/none.json") is None
    assert store.url("a/b.json") == f"{store.uri}/a/b.json"
    assert dict(store.list_sized("a/")) == {"a/b.json": store.size("a/b.json")}
