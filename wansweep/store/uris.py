"""Opening a store from its URI, and reading inputs (manifests, images, audio) by URI."""

from __future__ import annotations

from pathlib import Path

from wansweep.errors import StoreError
from wansweep.store.base import Store


def s3_location(uri: str) -> tuple[str, str]:
    """``s3://bucket/key`` as (bucket, key): everything after the bucket's slash is the key,
    as S3 and the AWS CLI read it (``#``, ``?`` and spaces included; a URL parser would cut
    ``img/shot#2.jpg`` at the ``#`` and fetch another object)."""
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key


def open_store(uri: str) -> Store:
    """``s3://bucket/prefix`` or a local folder path (``file://`` accepted)."""
    if uri.startswith("s3://"):
        bucket, prefix = s3_location(uri)
        if not bucket:
            raise StoreError(f"store URI {uri!r} names no bucket; use s3://BUCKET/PREFIX")
        from wansweep.store.s3 import S3Store

        return S3Store(bucket, prefix)
    uri = uri.removeprefix("file://")
    if "://" in uri:
        raise StoreError(
            f"store URI {uri!r}: only s3://bucket/prefix and local folders are supported"
        )
    from wansweep.store.local import LocalStore

    return LocalStore(uri)


def read_uri(uri: str) -> bytes:
    """Bytes of a local path or an s3:// object (manifests, images, audio)."""
    if uri.startswith("s3://"):
        bucket, key = s3_location(uri)
        from wansweep.store.s3 import s3_client

        client = s3_client()
        try:
            return client.get_object(Bucket=bucket, Key=key)["Body"].read()
        except client.exceptions.NoSuchKey:
            raise FileNotFoundError(f"{uri}: no such object") from None
        except client.exceptions.NoSuchBucket:
            raise FileNotFoundError(f"{uri}: no such bucket") from None
    return Path(uri.removeprefix("file://")).read_bytes()


def presign(uri: str, expires_s: int = 3600) -> str:
    """A short-lived HTTPS GET URL for a private s3:// object (never made public)."""
    bucket, key = s3_location(uri)
    from wansweep.store.s3 import s3_client

    return s3_client().generate_presigned_url(
        "get_object",
        Params={"Bucket": bucket, "Key": key},
        ExpiresIn=expires_s,
    )
