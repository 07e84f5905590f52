"""Secrets never leave the process: text from outside (fal's errors, S3's errors, exceptions)
is scrubbed before it is stored, logged, reported or notified.

What counts as a secret: the query string of a presigned or signed URL (AWS access key id,
signature, session token, expiry), ``Authorization``/``Key`` header values, and the values of
the credential variables in this process's environment, wherever they appear.
"""

from __future__ import annotations

import os
import re

CREDENTIAL_VARIABLES = (
    "FAL_KEY",
    "FAL_KEY_ID",
    "FAL_KEY_SECRET",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "WANSWEEP_NOTIFY_URL",
)
REDACTED = "[redacted]"

# a URL's query string when it carries signing parameters (any order, any case)
_SIGNED_QUERY = re.compile(
    r"\?[^\s\"'<>]*(?:x-amz-|signature=|awsaccesskeyid=|x-goog-|sig=|token=)[^\s\"'<>]*",
    re.IGNORECASE,
)
_AUTH_VALUE = re.compile(r"(?i)\b(authorization\s*[:=]\s*|key\s+)([A-Za-z0-9._:/+=-]{12,})")
_AWS_KEY_ID = re.compile(r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b")


def scrub(text: str | None) -> str | None:
    """``text`` with every secret it may carry replaced by ``[redacted]``."""
    if not text:
        return text
    text = _SIGNED_QUERY.sub("?" + REDACTED, text)
    text = _AUTH_VALUE.sub(lambda m: m.group(1) + REDACTED, text)
    text = _AWS_KEY_ID.sub(REDACTED, text)
    for name in CREDENTIAL_VARIABLES:
        value = os.environ.get(name)
        if value and len(value) >= 6:
            text = text.replace(value, REDACTED)
    return text
