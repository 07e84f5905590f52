"""Optional notifications: POST a message to the webhook in WANSWEEP_NOTIFY_URL.

The body is ``{"text": ...}``, which Slack, Mattermost and most chat webhooks accept. The URL
lives in the environment (such URLs are secrets), never in flow parameters or logs.
"""

from __future__ import annotations

import logging
import os

import httpx

log = logging.getLogger(__name__)


def notify(text: str) -> bool:
    url = os.environ.get("WANSWEEP_NOTIFY_URL")
    if not url:
        return False
    try:
        httpx.post(url, json={"text": text}, timeout=10).raise_for_status()
        return True
    except httpx.HTTPError as exc:  # a notification never fails a sweep
        log.warning("notification not delivered: %s", type(exc).__name__)
        return False
