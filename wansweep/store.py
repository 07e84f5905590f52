"""Object store: ``s3://bucket/prefix`` through boto3, or a local folder, behind one interface.

Credentials and endpoint come from the standard AWS configuration (``AWS_ENDPOINT_URL``,
profiles, ...), so AWS S3, MinIO, R2 and SeaweedFS all work. Only this module imports boto3.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from wansweep.errors import StoreError, StoreUnavailable


class Store(ABC):
    """Keys are '/'-separated paths below the store's root. Writes are whole-object: a reader
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

    @abstractmethod
    def download_file(self, key: str, path: Path) -> None: ...

    @abstractmethod
    def iter_chunks(self, key: str) -> Iterator[bytes] | None:
        """The object's bytes in chunks, None if there is none."""

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

    def check_conditional_writes(self) -> None:
        """Fail loudly when the store ignores conditional creates (leases would not exclude
        anything, and two runs could pay for the same job): create a probe twice."""
        import uuid

        probe = f"leases/.probe-{uuid.uuid4().hex}"
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


class LocalStore(Store):
    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser().resolve()
        self.uri = str(self.root)

    def _path(self, key: str) -> Path:
        return self.root / key

    def _staged(self, key: str, write) -> tuple[Path, str]:
        """Write a temporary file beside ``key`` (removed if anything fails), readable as the
        user's umask says (mkstemp alone would leave it 0600)."""
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o666 & ~_UMASK)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path, tmp

    def _publish(self, key: str, write) -> None:
        path, tmp = self._staged(key, write)
        try:
            os.replace(tmp, path)  # readers see the old object or the whole new one
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def put_bytes(self, key: str, data: bytes, content_type: str | None = None) -> None:
        self._publish(key, lambda f: f.write(data))

    def put_file(self, key: str, path: Path, content_type: str | None = None) -> None:
        def copy(f) -> None:
            with open(path, "rb") as src:
                shutil.copyfileobj(src, f, 1 << 20)

        self._publish(key, copy)

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    @staticmethod
    def _version(st: os.stat_result) -> str:
        return f"{st.st_ino}-{st.st_mtime_ns}-{st.st_size}"

    def create_exclusive(self, key: str, data: bytes) -> str | bool:
        path, tmp = self._staged(key, lambda f: f.write(data))
        try:
            os.link(tmp, path)  # atomic, and fails if the name exists (as O_EXCL would)
        except FileExistsError:
            return False
        finally:
            Path(tmp).unlink(missing_ok=True)
        return self._version(path.stat())

    def read_versioned(self, key: str) -> tuple[bytes, str, float | None] | None:
        path = self._path(key)
        try:
            with path.open("rb") as f:
                st = os.fstat(f.fileno())
                data = f.read()
        except FileNotFoundError:
            return None
        return data, self._version(st), time.time() - st.st_mtime

    def replace_if(self, key: str, data: bytes, version: str | None) -> str | bool:
        import fcntl

        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = os.open(path.parent, os.O_RDONLY)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)  # one compare-and-swap at a time in this folder
            try:
                if version is None or self._version(path.stat()) != version:
                    return False
            except FileNotFoundError:
                return False
            self._publish(key, lambda f: f.write(data))
            return self._version(path.stat())
        finally:
            os.close(lock)

    def get_bytes(self, key: str) -> bytes | None:
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, IsADirectoryError):
            return None

    def size(self, key: str) -> int | None:
        try:
            return self._path(key).stat().st_size
        except FileNotFoundError:
            return None

    def list(self, prefix: str) -> Iterator[str]:
        base = self._path(prefix)
        folder = base if prefix.endswith("/") or base.is_dir() else base.parent
        if not folder.is_dir():
            return
        for dirpath, _, files in os.walk(folder):
            for name in files:
                key = Path(dirpath, name).relative_to(self.root).as_posix()
                if not name.startswith(".tmp-") and key.startswith(prefix):
                    yield key

    def download_file(self, key: str, path: Path) -> None:
        shutil.copyfile(self._path(key), path)

    def iter_chunks(self, key: str) -> Iterator[bytes] | None:
        path = self._path(key)
        if not path.is_file():
            return None

        def read() -> Iterator[bytes]:
            with path.open("rb") as f:
                yield from iter(lambda: f.read(1 << 20), b"")

        return read()


def _read_umask() -> int:
    mask = os.umask(0)  # the only way to read it; done once, at import, before any thread
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def _unavailable_on_network_errors(cls: type) -> type:
    """Translate botocore's network and throttling errors (after boto's own retries) into
    :class:`StoreUnavailable`, so callers decide retries on one class, not on botocore's."""
    import functools

    def unavailable(exc: Exception) -> bool:
        from botocore.exceptions import ClientError, ConnectionError, HTTPClientError

        if isinstance(exc, (ConnectionError, HTTPClientError)):
            return True
        if isinstance(exc, ClientError):
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
            return status >= 500 or status == 429 or "Throttl" in str(exc)
        return False

    def translate(method):
        @functools.wraps(method)
        def wrapper(*args, **kwargs):
            try:
                return method(*args, **kwargs)
            except Exception as exc:
                if unavailable(exc):
                    raise StoreUnavailable(f"object store unavailable: {exc}") from exc
                raise

        return wrapper

    for name, value in list(vars(cls).items()):
        if callable(value) and not name.startswith("_"):
            setattr(cls, name, translate(value))
    return cls


@_unavailable_on_network_errors
class S3Store(Store):
    def __init__(self, bucket: str, prefix: str = "", client: Any = None):
        self.bucket, self.prefix = bucket, prefix.strip("/")
        self.uri = f"s3://{bucket}/{self.prefix}".rstrip("/")
        self.client = client or s3_client()

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def put_bytes(self, key: str, data: bytes, content_type: str | None = None) -> None:
        extra = {"ContentType": content_type} if content_type else {}
        self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, **extra)

    def put_file(self, key: str, path: Path, content_type: str | None = None) -> None:
        from boto3.s3.transfer import TransferConfig

        extra = {"ContentType": content_type} if content_type else {}
        # Multipart above 16 MB, so a large video never sits whole in memory.
        cfg = TransferConfig(multipart_threshold=16 * 2**20, multipart_chunksize=16 * 2**20)
        self.client.upload_file(str(path), self.bucket, self._key(key), ExtraArgs=extra, Config=cfg)

    def get_bytes(self, key: str) -> bytes | None:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()
        except self.client.exceptions.NoSuchKey:
            return None

    def size(self, key: str) -> int | None:
        from botocore.exceptions import ClientError

        try:
            return self.client.head_object(Bucket=self.bucket, Key=self._key(key))["ContentLength"]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise

    def list(self, prefix: str) -> Iterator[str]:
        paginator = self.client.get_paginator("list_objects_v2")
        strip = len(self.prefix) + 1 if self.prefix else 0
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self._key(prefix)):
            for obj in page.get("Contents", []):
                yield obj["Key"][strip:]

    def download_file(self, key: str, path: Path) -> None:
        self.client.download_file(self.bucket, self._key(key), str(path))

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def create_exclusive(self, key: str, data: bytes) -> str | bool:
        try:
            answer = self.client.put_object(
                Bucket=self.bucket, Key=self._key(key), Body=data, IfNoneMatch="*"
            )
        except self.client.exceptions.ClientError as exc:
            if _precondition_failed(exc):
                return False
            raise
        return answer["ETag"]

    def read_versioned(self, key: str) -> tuple[bytes, str, float | None] | None:
        from email.utils import parsedate_to_datetime

        try:
            answer = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
        except self.client.exceptions.NoSuchKey:
            return None
        date = answer["ResponseMetadata"].get("HTTPHeaders", {}).get("date")
        age = (
            (parsedate_to_datetime(date) - answer["LastModified"]).total_seconds() if date else None
        )
        return answer["Body"].read(), answer["ETag"], age

    def replace_if(self, key: str, data: bytes, version: str | None) -> str | bool:
        if version is None:
            return False
        try:
            answer = self.client.put_object(
                Bucket=self.bucket, Key=self._key(key), Body=data, IfMatch=version
            )
        except self.client.exceptions.ClientError as exc:
            if _precondition_failed(exc) or _missing(exc):
                return False
            raise
        return answer["ETag"]

    def iter_chunks(self, key: str) -> Iterator[bytes] | None:
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"]
        except self.client.exceptions.NoSuchKey:
            return None
        return body.iter_chunks(1 << 20)


def _precondition_failed(exc: Exception) -> bool:
    error = getattr(exc, "response", {}).get("Error", {})
    return error.get("Code") in ("PreconditionFailed", "412", "ConditionalRequestConflict")


def _missing(exc: Exception) -> bool:
    return getattr(exc, "response", {}).get("Error", {}).get("Code") in ("NoSuchKey", "404")


def s3_client() -> Any:
    import boto3
    from botocore.config import Config

    return boto3.session.Session().client(
        "s3",
        config=Config(
            retries={"max_attempts": 8, "mode": "standard"},
            max_pool_connections=64,
            s3={"addressing_style": "path"},
        ),
    )


def open_store(uri: str) -> Store:
    """``s3://bucket/prefix`` or a local folder path (``file://`` accepted)."""
    if uri.startswith("s3://"):
        parsed = urlparse(uri)
        if not parsed.netloc:
            raise StoreError(f"store URI {uri!r} names no bucket; use s3://BUCKET/PREFIX")
        return S3Store(parsed.netloc, parsed.path)
    uri = uri.removeprefix("file://")
    if "://" in uri:
        raise StoreError(
            f"store URI {uri!r}: only s3://bucket/prefix and local folders are supported"
        )
    return LocalStore(uri)


def read_uri(uri: str) -> bytes:
    """Bytes of a local path or an s3:// object (manifests, images, audio)."""
    if uri.startswith("s3://"):
        parsed = urlparse(uri)
        client = s3_client()
        try:
            return client.get_object(Bucket=parsed.netloc, Key=parsed.path.lstrip("/"))[
                "Body"
            ].read()
        except client.exceptions.NoSuchKey:
            raise FileNotFoundError(f"{uri}: no such object") from None
        except client.exceptions.NoSuchBucket:
            raise FileNotFoundError(f"{uri}: no such bucket") from None
    return Path(uri.removeprefix("file://")).read_bytes()


def presign(uri: str, expires_s: int = 3600) -> str:
    """A short-lived HTTPS GET URL for a private s3:// object (never made public)."""
    parsed = urlparse(uri)
    return s3_client().generate_presigned_url(
        "get_object",
        Params={"Bucket": parsed.netloc, "Key": parsed.path.lstrip("/")},
        ExpiresIn=expires_s,
    )
