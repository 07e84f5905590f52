"""The report task: builds the sweep report from the archive and publishes Prefect artifacts."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from wansweep.errors import StoreRefused
from wansweep.results.report import write_report
from wansweep.store import open_store, presign
from wansweep.store.layout import report_file

LINK_EXPIRES_S = 7 * 24 * 3600  # the longest S3 allows a presigned link


@task(name="report", cache_policy=NO_CACHE, persist_result=False)
def build_report(store_uri: str, sweep: str, out_dir: str | None = None) -> dict | None:
    """The report's files by kind; None, with a one-line warning and no traceback, when the
    archive refuses writes (full, read-only): the flow ends Failed saying so."""
    store = open_store(store_uri)
    try:
        _, summary, files = write_report(store, sweep, Path(out_dir) if out_dir else None)
    except StoreRefused as exc:
        get_run_logger().warning("report not written: %s", exc)
        return None
    markdown = (store.get_bytes(report_file(sweep, "summary.md")) or b"").decode()
    try:
        from prefect.artifacts import (
            create_link_artifact,
            create_markdown_artifact,
            create_table_artifact,
        )

        create_table_artifact(
            key=f"{sweep}-arms",
            table=summary.astype(object).where(summary.notna(), "").to_dict("records"),
            description=f"Sweep {sweep}: summary by arm",
        )
        create_markdown_artifact(
            key=f"{sweep}-summary",
            markdown=markdown,
            description=f"Sweep {sweep}: headline comparison",
        )
        if files.html.startswith("s3://"):  # a browser opens a presigned link, for a week
            link = presign(files.html, expires_s=LINK_EXPIRES_S)
            create_link_artifact(
                key=f"{sweep}-report",
                link=link,
                link_text=f"HTML report of {sweep} (this link expires in 7 days; "
                "`wansweep report` makes the report again)",
            )
        else:  # a browser will not open a file:// link from the UI: the path, to copy
            create_markdown_artifact(
                key=f"{sweep}-report",
                markdown=f"HTML report of {sweep}: `{Path(files.html).resolve()}`",
                description=f"Sweep {sweep}: where the report is",
            )
    except Exception as exc:  # artifacts are a view; the report itself is in the archive
        get_run_logger().warning("could not publish Prefect artifacts: %s", exc)
    return files.__dict__
