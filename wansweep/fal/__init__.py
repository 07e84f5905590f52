"""The one owner of fal: only this package imports fal_client.

- :mod:`.policy`     pure decisions: is a submit accepted / retried / ambiguous; backoff
- :mod:`.connection` configuration, the HTTP client, the retry loop
- :mod:`.queue`      submit, wait, result, cancel (:class:`FalQueue`, the face jobs use)
- :mod:`.stream`     fal's status stream, and :class:`Completion` (when a request completed)
- :mod:`.platform`   the Platform API: request listing, pricing
- :mod:`.download`   video downloads
"""

from wansweep.fal.connection import FalConfig
from wansweep.fal.queue import FalQueue

__all__ = ["FalConfig", "FalQueue"]
