"""Video downloads from fal's CDN: streamed to disk, hashed on the way, never whole in memory."""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx

from wansweep.errors import FalError, FalUnavailable
from wansweep.fal import policy


class DownloadMixin:
    """Part of :class:`wansweep.fal.queue.FalQueue` (needs ``http``, ``attempts``, backoff)."""

    def download(self, url: str, dest: Path, expected_size: int | None = None) -> tuple[int, str]:
        """Stream a video to ``dest``; returns (size, sha256). A short body is retried."""
        last = ""
        for attempt in range(self.attempts):
            h = hashlib.sha256()
            size = 0
            headers = None
            try:
                with self.cdn.stream("GET", url) as response:
                    headers = response.headers
                    code = response.status_code
                    if code != 200:
                        kind = policy.download_failure(code)
                        if kind is not None:
                            raise FalError(f"video download failed ({code}) from {url}", kind, code)
                        last = f"answer {code}"
                    else:
                        with dest.open("wb") as f:
                            for chunk in response.iter_bytes(1 << 20):
                                f.write(chunk)
                                h.update(chunk)
                                size += len(chunk)
                        if not expected_size or size == expected_size:
                            return size, h.hexdigest()
                        last = f"got {size} bytes, expected {expected_size}"
            except httpx.TransportError as exc:
                last = f"{type(exc).__name__}: {exc}"
            if attempt < self.attempts - 1:
                self.pause_before_retry(attempt, headers)
        raise FalUnavailable(f"video download failed: {last}")
