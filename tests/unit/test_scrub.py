"""Secrets never leave: text from outside (fal's errors, presigned URLs, keys) is scrubbed wherever it is kept."""

from __future__ import annotations

from wansweep.errors import FalError
from wansweep.run.lifecycle import LedgerEntry
from wansweep.scrub import scrub

PRESIGNED = (
    "https://bucket.s3.amazonaws.com/in/a.png?X-Amz-Algorithm=AWS4-HMAC-SHA256"
    "&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20261122%2Fus-east-1%2Fs3%2Faws4_request"
    "&X-Amz-Security-Token=FwoGZXIvYXdzEJr&X-Amz-Signature=0123abcd"
)


def test_secrets_are_scrubbed_from_errors_and_the_ledger(monkeypatch):
    monkeypatch.setenv("FAL_KEY", "key-id:key-secret-value")
    text = (
        f"Failed to download the file from {PRESIGNED}; Authorization: Key key-id:key-secret-value"
    )
    for out in (
        scrub(text),
        str(FalError(text, "invalid", 422)),
        LedgerEntry("k").with_changes(error=text).error,
    ):
        assert "AKIA" not in out and "Signature" not in out and "FwoG" not in out
        assert "key-secret-value" not in out and "[redacted]" in out
        assert "https://bucket.s3.amazonaws.com/in/a.png" in out  # what failed stays readable
