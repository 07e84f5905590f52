"""Media: reading inputs within bounds, and looking at videos (probe, frames, quality).

- :mod:`.fetch`    bounded reads of images and audio (size, time, redirects, private addresses)
- :mod:`.frames`   probing a video, thumbnails, first-frame references and similarity
- :mod:`.quality`  the metric table: each video measured once, at archive time

May import :mod:`wansweep.store`, :mod:`wansweep.errors` and :mod:`wansweep.scrub` only
(tests/unit/test_house.py).
"""

from wansweep._face import lazy

_EXPORTS = {
    "fetch_url": "fetch",
    "read_local": "fetch",
    "FetchRefused": "fetch",
    "probe": "frames",
    "Probe": "frames",
    "METRICS": "quality",
    "measure": "quality",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy(__name__, _EXPORTS)
