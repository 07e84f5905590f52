"""The generic parts of every store (wansweep.store.base), on a local folder and on a store
that ignores conditional creates as some S3-compatible servers do."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import pytest

from wansweep.errors import StoreError, StoreMismatch
from wansweep.store import LocalStore
from wansweep.store.base import Store, check_key


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


class Memory(Store):
    """The smallest store there is: only what every store must implement, so each generic
    method of Store is the one under test. Objects come back in chunks of ``chunk`` bytes,
    as a network store streams them; content types are kept, as S3 keeps them."""

    def __init__(self, uri: str = "mem://archive", chunk: int = 4):
        self.uri, self.chunk = uri, chunk
        self.objects: dict[str, bytes] = {}
        self.types: dict[str, str | None] = {}
        self.creates = None  # None: honoured; else what every conditional create answers

    def put_bytes(self, key, data, content_type=None):
        self.objects[check_key(key)], self.types[key] = bytes(data), content_type

    def put_file(self, key, path, content_type=None):
        self.put_bytes(key, path.read_bytes(), content_type)

    def get_bytes(self, key):
        return self.objects.get(check_key(key))

    def size(self, key):
        data = self.objects.get(check_key(key))
        return None if data is None else len(data)

    def list(self, prefix):
        check_key(prefix, prefix=True)
        return iter(sorted(k for k in self.objects if k.startswith(prefix)))

    def download_file(self, key, path):
        path.write_bytes(self.objects[check_key(key)])

    def iter_chunks(self, key):
        data = self.objects.get(check_key(key))
        if data is None:
            return None
        return iter([data[i : i + self.chunk] for i in range(0, len(data), self.chunk)])

    def delete(self, key):
        self.objects.pop(check_key(key), None)

    def create_exclusive(self, key, data):
        if self.creates is not None:
            return self.creates
        if key in self.objects:
            return False
        self.put_bytes(key, data)
        return "v1"

    def read_versioned(self, key):
        raise NotImplementedError

    def replace_if(self, key, data, version):
        raise NotImplementedError


def test_any_range_of_a_chunked_object_is_exactly_its_bytes():
    # every (start, end) across chunk edges, as a video player's Range requests ask
    data = bytes(range(23))
    store = Memory(chunk=4)
    store.put_bytes("v.mp4", data)
    for start in range(len(data)):
        for end in range(start, len(data) + 3):
            got = b"".join(store.iter_range("v.mp4", start, end))
            assert got == data[start : end + 1], (start, end)


def test_a_range_of_a_missing_object_is_empty():
    assert b"".join(Memory().iter_range("gone.mp4", 0, 10)) == b""


def test_sizes_are_listed_for_the_keys_below_the_prefix_only_and_a_vanished_one_is_skipped():
    class Vanishing(Memory):
        def size(self, key):  # removed between the listing and its size
            return None if key == "jobs/b/video.mp4" else super().size(key)

    store = Vanishing()
    store.put_bytes("jobs/a/video.mp4", b"12345")
    store.put_bytes("jobs/b/video.mp4", b"1")
    store.put_bytes("other/c.json", b"{}")
    assert dict(store.list_sized("jobs/")) == {"jobs/a/video.mp4": 5}


def test_a_url_is_the_stores_uri_and_the_key_with_one_slash_between(tmp_path):
    assert Memory("mem://archive/").url("jobs/a/video.mp4") == "mem://archive/jobs/a/video.mp4"
    local = LocalStore(tmp_path / "sweep-X")  # whatever the folder's name ends with
    assert local.url("jobs/a.json") == f"{tmp_path}/sweep-X/jobs/a.json"


def test_a_store_whose_conditional_creates_never_succeed_is_refused_too():
    # no lease could ever be taken on it (and a probe left behind would hide a careless store)
    store = Memory()
    store.creates = False
    with pytest.raises(StoreError, match="does not honour conditional writes"):
        store.check_conditional_writes("leases/.probe-3")


def test_the_refusal_tells_the_user_which_stores_will_do():
    store = Memory()
    store.creates = "v"  # every create "succeeds"
    with pytest.raises(StoreError) as err:
        store.check_conditional_writes("leases/.probe-4")
    assert str(err.value) == (
        "mem://archive does not honour conditional writes (If-None-Match: *), so two runs "
        "on this archive could pay for the same job; use an S3 store that supports them "
        "(AWS S3, MinIO, moto; see README) or a local folder"
    )


def test_a_verified_copy_keeps_its_content_type_and_a_bad_one_names_its_url(tmp_path):
    source = tmp_path / "v.mp4"
    source.write_bytes(b"video bytes")
    sha = hashlib.sha256(b"video bytes").hexdigest()
    store = Memory()
    store.put_verified("jobs/a/video.mp4", source, sha, "video/mp4")  # served as a video
    assert store.types["jobs/a/video.mp4"] == "video/mp4"
    with pytest.raises(StoreMismatch, match="^mem://archive/jobs/b/video.mp4: "):
        store.put_verified("jobs/b/video.mp4", source, "0" * 64, "video/mp4")
    assert not store.exists("jobs/b/video.mp4")


def test_json_is_stored_as_json_the_same_bytes_whatever_the_key_order_one_key_a_line():
    store = Memory()
    store.put_json("a.json", {"b": 1, "a": 2})
    store.put_json("b.json", {"a": 2, "b": 1})
    assert store.types["a.json"] == "application/json"  # S3 serves it as JSON
    # a rewrite of the same value changes no byte (no needless churn in a synced archive)
    assert store.objects["a.json"] == store.objects["b.json"]
    lines = [line.strip() for line in store.objects["a.json"].decode().splitlines()]
    assert lines == ["{", '"a": 2,', '"b": 1', "}"]  # a diff of two archives shows the key


def test_json_of_values_json_cannot_spell_stores_their_text(tmp_path):
    # a job's meta may carry a path or a timestamp: stored as its text, not a crash
    store = Memory()
    when = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    store.put_json("meta.json", {"video": tmp_path / "v.mp4", "at": when})
    assert store.get_json("meta.json") == {"video": str(tmp_path / "v.mp4"), "at": str(when)}
