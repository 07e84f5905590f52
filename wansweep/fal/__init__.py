"""The one owner of fal: only this package imports fal_client (tests/unit/test_house.py).

- :mod:`.types`      plain data of fal's protocol: a request's :class:`Handle`, polling settings
- :mod:`.policy`     pure decisions: is a submit accepted / retried / ambiguous; backoff
- :mod:`.connection` configuration, the HTTP client, the retry loop
- :mod:`.queue`      submit, wait, result, cancel (:class:`FalQueue`, the face jobs use)
- :mod:`.stream`     fal's status stream, and :class:`Completion` (when a request completed)
- :mod:`.platform`   the Platform API: request listing, pricing
- :mod:`.download`   video downloads
- :mod:`.webhooks`   the receiver of fal's webhooks

May import :mod:`wansweep.errors` and :mod:`wansweep.scrub` only. The face is lazy: fal-client
reads its host variables when it is first imported, so importing :mod:`.types` (as planning
does) must not import it (tests/unit/test_core_imports.py).
"""

from wansweep._face import lazy

_EXPORTS = {
    "FalConfig": "connection",
    "FalQueue": "queue",
    "Handle": "types",
    "PollSpec": "types",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy(__name__, _EXPORTS)
