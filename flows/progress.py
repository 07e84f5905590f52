"""Progress of a sweep's jobs: a live bar on a terminal, else a log line every 5%, and a
Prefect progress artifact for the UI."""

from __future__ import annotations

import sys
import time
from typing import Any


class Progress:
    """A live bar on a terminal; otherwise a log line every 5% (and at the end)."""

    def __init__(self, total: int, log: Any, sweep: str = ""):
        self.total, self.log, self.done = total, log, 0
        self.artifact = None
        if total:
            from prefect.artifacts import create_progress_artifact

            try:
                self.artifact = create_progress_artifact(
                    progress=0.0, key=f"{sweep}-progress", description=f"Sweep {sweep}: jobs done"
                )
            except Exception:  # a view only; never stop a sweep for it
                self.artifact = None
        self.started = time.monotonic()
        self.bar = None
        if total and sys.stderr.isatty():
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
            from rich.progress import Progress as Bar

            self.bar = Bar(
                TextColumn("jobs"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                TextColumn("{task.description}"),
            )

    def __enter__(self) -> Progress:
        if self.bar is not None:
            self.bar.start()
            self.task = self.bar.add_task("", total=self.total)
        return self

    def advance(self, counts: dict[str, int]) -> None:
        self.done += 1
        text = ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
        step = max(1, min(100, self.total // 20))
        if self.artifact is not None and (self.done % step == 0 or self.done == self.total):
            from prefect.artifacts import update_progress_artifact

            update_progress_artifact(self.artifact, progress=100.0 * self.done / self.total)
        if self.bar is not None:
            self.bar.update(self.task, advance=1, description=text)
        elif self.done % max(1, self.total // 20) == 0 or self.done == self.total:
            self.log.info(
                "progress %d/%d (%.0f%%) %s, %.0f s",
                self.done,
                self.total,
                100 * self.done / self.total,
                text,
                time.monotonic() - self.started,
            )

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()
