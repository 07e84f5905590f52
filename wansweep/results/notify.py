"""Optional notifications: POST a message to the webhook in WANSWEEP_NOTIFY_URL.

The body is ``{"text": ...}``, which Slack, Mattermost and most chat webhooks accept. The URL
lives in the environment (such URLs are secrets), never in flow parameters or logs.
"""

from __future__ import annotations

import logging
import os

import httpx

from wansweep.scrub import scrub

log = logging.getLogger(__name__)


def chat_escape(text: str) -> str:
    """Text as chat webhooks show it, not as commands: ``<!channel>``, ``<url|label>`` and
    mentions are Slack/Mattermost markup in ``<...>``; escaping &, < and > disarms them all."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def notify(text: str) -> bool:
    """Post ``text`` (scrubbed of secrets, chat markup escaped); never fails a sweep."""
    url = os.environ.get("WANSWEEP_NOTIFY_URL")
    if not url:
        return False
    try:
        body = {"text": chat_escape(scrub(text) or "")}
        httpx.post(url, json=body, timeout=10).raise_for_status()
        return True
    except httpx.HTTPError as exc:  # a notification never fails a sweep
        log.warning("notification not delivered: %s", type(exc).__name__)
        return False
