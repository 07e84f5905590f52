"""The :class:`Store` interface every archive is read and written through."""

from __future__ import annotations

import hashlib
import json
import re
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from wansweep.errors import StoreError, StoreMismatch

_UNSAFE = re.compile(r"[\x00-\x1f\x7f\\]")  # NUL, control characters, backslashes


def check_key(key: str, prefix: bool = False) -> str:
    """``key`` if it stays below a store's root, else :class:`StoreError`: it must be a
    relative '/'-separated path without empty, ``.`` or ``..`` segments, backslashes, NUL or
    control characters, whoever built it (a webhook's request id, a row id, a sweep name).
    ``prefix``: a listing's prefix, which may be empty or end with '/'."""
    if not isinstance(key, str) or (not key and not prefix):
        raise StoreError(f"store key {key!r} refused: not a path")
    if key.startswith("/") or _UNSAFE.search(key):
        raise StoreError(
            f"store key {key!r} refused: absolute, or a backslash or control character"
        )
    parts = key.split("/")
    if prefix:
        parts = parts[:-1] if parts[-1] == "" or not key else parts
    if any(part in ("", ".", "..") for part in parts):
        raise StoreError(f"store key {key!r} refused: an empty, '.' or '..' segment")
    return key


class Store(ABC):
    """Keys are '/'-separated paths below the store's root, checked by :func:`check_key` in
    every store before any use (none can leave the root). Writes are whole-object: a reader
    sees the old object or the whole new one, never a part."""

    uri: str

    def url(self, key: str) -> str:
        return f"{self.uri.rstrip('/')}/{key}"

    @abstractmethod
    def put_bytes(self, key: str, data: bytes, content_type: str | None = None) -> None: ...

    @abstractmethod
    def put_file(self, key: str, path: Path, content_type: str | None = None) -> None: ...

    @abstractmethod
    def get_bytes(self, key: str) -> bytes | None:
        """The object's bytes, None if there is none."""

    @abstractmethod
    def size(self, key: str) -> int | None:
        """The object's size, None if there is none."""

    @abstractmethod
    def list(self, prefix: str) -> Iterator[str]:
        """Every key below ``prefix`` (temporary files excluded)."""

    def list_sized(self, prefix: str) -> Iterator[tuple[str, int]]:
        """Every key below ``prefix`` with its size, from the listing where the store gives
        sizes there (S3, a folder), so that checking many objects' sizes costs no call each."""
        for key in self.list(prefix):
            if (size := self.size(key)) is not None:
                yield key, size

    @abstractmethod
    def download_file(self, key: str, path: Path) -> None: ...

    @abstractmethod
    def iter_chunks(self, key: str) -> Iterator[bytes] | None:
        """The object's bytes in chunks, None if there is none."""

    def iter_range(self, key: str, start: int, end: int) -> Iterator[bytes]:
        """Bytes ``start`` to ``end`` (inclusive) of an object, in chunks. This generic version
        reads from the start; stores that can read a range themselves override it."""
        chunks = self.iter_chunks(key) or iter(())
        offset = 0
        for chunk in chunks:
            lo, hi = max(start - offset, 0), min(end + 1 - offset, len(chunk))
            if lo < hi:
                yield chunk[lo:hi]
            offset += len(chunk)
            if offset > end:
                return

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove an object (no error when it is already gone)."""

    @abstractmethod
    def create_exclusive(self, key: str, data: bytes) -> str | bool:
        """Create ``key`` only if it does not exist: its version, or False if it existed.
        Of several concurrent callers exactly one gets a version."""

    @abstractmethod
    def read_versioned(self, key: str) -> tuple[bytes, str, float | None] | None:
        """(bytes, version, age in seconds on the store's own clock), or None."""

    @abstractmethod
    def replace_if(self, key: str, data: bytes, version: str | None) -> str | bool:
        """Replace ``key`` only if it is still at ``version``: the new version, or False."""

    def check_conditional_writes(self, probe: str) -> None:
        """Fail loudly when the store ignores conditional creates (leases would not exclude
        anything, and two runs could pay for the same job): create ``probe`` twice."""
        try:
            first = self.create_exclusive(probe, b"probe")
            second = self.create_exclusive(probe, b"probe")
        finally:
            self.delete(probe)
        if first is False or second is not False:
            raise StoreError(
                f"{self.uri} does not honour conditional writes (If-None-Match: *), so two runs "
                "on this archive could pay for the same job; use an S3 store that supports them "
                "(AWS S3, MinIO, moto; see README) or a local folder"
            )

    def put_verified(
        self, key: str, path: Path, sha256: str, content_type: str | None = None
    ) -> None:
        """Store a file whose checksum is ``sha256`` and make sure the store holds exactly
        those bytes, or raise :class:`StoreMismatch` with nothing left under ``key``.
        This generic version reads the object back; stores that can check an upload
        themselves (local folders, S3 checksums) read nothing back."""
        self.put_file(key, path, content_type)
        if self.sha256(key) != sha256:
            self.delete(key)
            raise StoreMismatch(f"{self.url(key)}: the stored copy's checksum differs")

    def fetch_matches(self, key: str, local: Path, sha256: str) -> bool:
        """Download ``key`` to ``local``; True when its bytes have this checksum."""
        self.download_file(key, local)
        h = hashlib.sha256()
        with local.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        return h.hexdigest() == sha256

    def exists(self, key: str) -> bool:
        return self.size(key) is not None

    def sha256(self, key: str) -> str | None:
        """Checksum of a stored object, read back in chunks (None if it is missing)."""
        chunks = self.iter_chunks(key)
        if chunks is None:
            return None
        h = hashlib.sha256()
        for chunk in chunks:
            h.update(chunk)
        return h.hexdigest()

    def put_json(self, key: str, value: Any) -> None:
        self.put_bytes(
            key,
            json.dumps(value, indent=1, sort_keys=True, default=str).encode(),
            "application/json",
        )

    def get_json(self, key: str) -> Any | None:
        data = self.get_bytes(key)
        return None if data is None else json.loads(data)
