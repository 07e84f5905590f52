"""The report task: builds the sweep report from the archive and publishes Prefect artifacts."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from wansweep.report import write_report
from wansweep.store import open_store


@task(name="report", cache_policy=NO_CACHE, persist_result=False)
def build_report(store_uri: str, sweep: str, out_dir: str | None = None) -> dict:
    _, summary, files = write_report(
        open_store(store_uri), sweep, Path(out_dir) if out_dir else None
    )
    try:
        from prefect.artifacts import create_markdown_artifact, create_table_artifact

        create_table_artifact(
            key=f"{sweep}-arms",
            table=summary.fillna("").to_dict("records"),
            description=f"Sweep {sweep}: summary by arm",
        )
        create_markdown_artifact(
            key=f"{sweep}-summary",
            markdown=Path(files.markdown).read_text()
            if not files.markdown.startswith("s3://")
            else "",
        )
    except Exception:  # artifacts are a view; the report itself is in the archive
        pass
    return files.__dict__
