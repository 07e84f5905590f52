"""How answers and URIs of S3 are read: pure functions, no server."""

from __future__ import annotations

import pytest
from botocore.utils import parse_timestamp

from wansweep.store import s3_location
from wansweep.store.s3 import _timestamp


@pytest.mark.parametrize(
    "value",
    [
        "2026-11-22T10:00:00.000Z",  # a listing's LastModified
        "2026-11-22T10:00:00Z",
        "2026-11-22T10:00:00.5Z",
        "2026-11-22T10:00:00.123456+02:00",
        "2026-11-22T10:00:00",
        "Sun, 22 Nov 2026 10:00:00 GMT",  # a header's
        "1700000000",
        1700000000,
    ],
)
def test_timestamps_read_as_botocore_reads_them(value):
    ours, theirs = _timestamp(value), parse_timestamp(value)
    assert (ours, ours.utcoffset()) == (theirs, theirs.utcoffset())  # same instant, same zone


def test_a_timestamp_botocore_refuses_is_refused():
    with pytest.raises(ValueError):
        _timestamp("Tuesday-ish")


@pytest.mark.parametrize(
    ("uri", "where"),
    [
        ("s3://b/img/shot#2.jpg", ("b", "img/shot#2.jpg")),
        ("s3://b/take?1.png", ("b", "take?1.png")),
        ("s3://b/a b/c d.png", ("b", "a b/c d.png")),
        ("s3://b", ("b", "")),
        ("s3://b/", ("b", "")),
        ("s3://b/prefix/", ("b", "prefix/")),
    ],
)
def test_everything_after_the_bucket_is_the_key(uri, where):
    assert s3_location(uri) == where
