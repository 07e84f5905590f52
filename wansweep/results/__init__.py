"""Results: what an archive holds, read back: reports, statistics, review, exports, spend.

- :mod:`.index`    sidecars as rows; the Parquet dataset indexes
- :mod:`.report`   the sweep report (tables, Markdown, HTML) from the archive alone
- :mod:`.html`     the report's self-contained page
- :mod:`.stats`    paired statistics, votes, Bradley-Terry
- :mod:`.markdown` the report's Markdown summary; CSV cells safe for spreadsheets
- :mod:`.review`   the blind side-by-side review: pairs, votes, a rater's session
- :mod:`.review_server` the review page, which only its user can drive
- :mod:`.export`   WebDataset and Hugging Face exports
- :mod:`.spend`    what was billed, beside fal's usage API
- :mod:`.notify`   the chat notification of a finished sweep
- :mod:`.verify`   the archive checked against itself (`wansweep verify`)

May import everything below it (:mod:`wansweep.run`, ``plan``, ``media``, ``fal``, ``store``,
``errors``, ``scrub``); never Prefect (tests/unit/test_house.py).
"""

from wansweep._face import lazy

_EXPORTS = {
    "write_report": "report",
    "jobs_frame": "report",
    "rebuild_indexes": "report",
    "export": "export",
    "compare_spend": "spend",
    "Review": "review",
    "serve": "review_server",
    "notify": "notify",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy(__name__, _EXPORTS)
