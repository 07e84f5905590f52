"""``s3://bucket/prefix`` through boto3 (AWS S3 and S3-compatible stores): the only module
that talks to boto3."""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from wansweep.errors import StoreMismatch, StoreRefused, StoreUnavailable
from wansweep.store.base import Store, check_key

log = logging.getLogger(__name__)
# S3's answers when the bytes it received do not match the checksum sent with them
REFUSED_DIGESTS = ("BadDigest", "InvalidDigest", "XAmzContentSHA256Mismatch")
# S3's answers to a write that every job's write would meet: no bucket, no permission, no room
REFUSED_WRITES = ("NoSuchBucket", "AccessDenied", "QuotaExceeded", "InsufficientStorage")
WRITES = frozenset({"put_bytes", "put_file", "put_verified", "create_exclusive", "replace_if"})


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

    def refused(exc: Exception) -> bool:
        from botocore.exceptions import ClientError

        if not isinstance(exc, ClientError):
            return False
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        code = str(exc.response.get("Error", {}).get("Code", ""))
        return status == 507 or any(c in code for c in REFUSED_WRITES)

    def translate(method):
        write = method.__name__ in WRITES

        @functools.wraps(method)
        def wrapper(*args, **kwargs):
            try:
                return method(*args, **kwargs)
            except Exception as exc:
                if any(code in str(exc) for code in REFUSED_DIGESTS):  # S3 refused the bytes
                    raise StoreMismatch(f"the store refused an upload: {exc}") from exc
                if write and refused(exc):
                    raise StoreRefused(f"the archive {args[0].uri} refuses writes: {exc}") from exc
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

    def _key(self, key: str, prefix: bool = False) -> str:
        check_key(key, prefix)
        return f"{self.prefix}/{key}" if self.prefix else key

    def put_bytes(self, key: str, data: bytes, content_type: str | None = None) -> None:
        extra = {"ContentType": content_type} if content_type else {}
        self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, **extra)

    def put_file(self, key: str, path: Path, content_type: str | None = None) -> None:
        self._upload(key, path, content_type, {})

    def _upload(self, key: str, path: Path, content_type: str | None, extra: dict) -> None:
        from boto3.s3.transfer import TransferConfig

        if content_type:
            extra = {**extra, "ContentType": content_type}
        # Multipart above PART bytes, so a large video never sits whole in memory.
        transfer = TransferConfig(multipart_threshold=PART, multipart_chunksize=PART)
        self.client.upload_file(
            str(path), self.bucket, self._key(key), ExtraArgs=extra, Config=transfer
        )

    def put_verified(
        self, key: str, path: Path, sha256: str, content_type: str | None = None
    ) -> None:
        """Uploaded with an S3 SHA-256 checksum: S3 refuses bytes that do not match what was
        sent (BadDigest), and the checksum it then reports is compared with ours (the whole
        file's, or per part for a multipart upload), so nothing is read back. A store that
        reports no checksum gets the generic read-back check instead."""
        self._upload(key, path, content_type, {"ChecksumAlgorithm": "SHA256"})
        head = self.client.head_object(
            Bucket=self.bucket, Key=self._key(key), ChecksumMode="ENABLED"
        )
        reported = head.get("ChecksumSHA256")
        if not reported:
            if self.bucket not in _NO_CHECKSUMS:
                _NO_CHECKSUMS.add(self.bucket)
                log.warning(
                    "s3://%s reports no upload checksums: archives are read back", self.bucket
                )
            if self.sha256(key) == sha256:
                return
        elif reported in _expected_checksums(path, sha256):
            return
        self.delete(key)
        raise StoreMismatch(f"{self.url(key)}: S3's checksum of the upload differs from ours")

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
        for key, _ in self.list_sized(prefix):
            yield key

    def list_sized(self, prefix: str) -> Iterator[tuple[str, int]]:
        full = self._key(prefix, prefix=True)
        paginator = self.client.get_paginator("list_objects_v2")
        strip = len(self.prefix) + 1 if self.prefix else 0
        for page in paginator.paginate(Bucket=self.bucket, Prefix=full):
            for obj in page.get("Contents", []):
                yield obj["Key"][strip:], obj["Size"]

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

    def iter_range(self, key: str, start: int, end: int) -> Iterator[bytes]:
        body = self.client.get_object(
            Bucket=self.bucket, Key=self._key(key), Range=f"bytes={start}-{end}"
        )["Body"]
        yield from body.iter_chunks(1 << 20)

    def iter_chunks(self, key: str) -> Iterator[bytes] | None:
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"]
        except self.client.exceptions.NoSuchKey:
            return None
        return body.iter_chunks(1 << 20)


PART = 16 * 2**20  # multipart threshold and part size of uploads
_NO_CHECKSUMS: set[str] = set()  # buckets whose store reported no checksum (warned once)


def _expected_checksums(path: Path, sha256: str) -> set[str]:
    """What S3 may report for this file: the whole file's SHA-256 (single part), or the
    SHA-256 of the parts' SHA-256s, with or without its ``-N`` suffix (multipart)."""
    whole = base64.b64encode(bytes.fromhex(sha256)).decode()
    if path.stat().st_size <= PART:
        return {whole}
    parts = []
    with path.open("rb") as f:  # the local file: no byte of the upload is read back
        while chunk := f.read(PART):
            parts.append(hashlib.sha256(chunk).digest())
    composite = base64.b64encode(hashlib.sha256(b"".join(parts)).digest()).decode()
    return {whole, composite, f"{composite}-{len(parts)}"}


def _precondition_failed(exc: Exception) -> bool:
    error = getattr(exc, "response", {}).get("Error", {})
    return error.get("Code") in ("PreconditionFailed", "412", "ConditionalRequestConflict")


def _missing(exc: Exception) -> bool:
    return getattr(exc, "response", {}).get("Error", {}).get("Code") in ("NoSuchKey", "404")


_clients: dict[tuple, Any] = {}
_clients_lock = threading.Lock()


def s3_client() -> Any:
    """The process's S3 client for the current AWS configuration (a client costs ~160 ms of
    CPU to make; boto3 clients are thread-safe, so one is shared)."""
    key = tuple(os.environ.get(v) for v in _CONFIG_VARIABLES)
    with _clients_lock:
        if key not in _clients:
            import boto3
            import botocore.session
            from botocore.config import Config

            core = botocore.session.get_session()
            # botocore reads every timestamp with dateutil (~100 us each): 70% of the CPU of
            # listing a folder, whose answers carry one per object
            core.get_component("response_parser_factory").set_parser_defaults(
                timestamp_parser=_timestamp
            )
            _clients[key] = boto3.session.Session(botocore_session=core).client(
                "s3",
                config=Config(
                    retries={"max_attempts": 8, "mode": "standard"},
                    max_pool_connections=64,
                    s3={"addressing_style": "path"},
                ),
            )
        return _clients[key]


def _timestamp(value: Any) -> Any:
    """A timestamp of an S3 answer as botocore's own parser gives it: ISO 8601 ones (listings,
    in XML) read by the standard library, anything else (HTTP dates in headers, epoch
    seconds) by botocore's parser."""
    from datetime import datetime

    if isinstance(value, str) and "T" in value:
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            pass
    from botocore.utils import parse_timestamp

    return parse_timestamp(value)


_CONFIG_VARIABLES = (
    "AWS_ENDPOINT_URL",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_REGION",
)
