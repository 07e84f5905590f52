"""Manifests (CSV, Parquet, JSONL; local or s3://) read into a frame of cells, each cell's
reading rules (seeds never truncated), and how a row's media paths resolve. The plan built
from them is :mod:`.planner`'s."""

from __future__ import annotations

import functools
import io
import math
import os
from pathlib import Path, PurePosixPath
from typing import Any

import pandas as pd

from wansweep.errors import ManifestError
from wansweep.plan import schema
from wansweep.store import read_uri

KNOWN_COLUMNS = {
    "id",
    "image",
    "prompt",
    "negative_prompt",
    "audio",
    "seed",
} | schema.SETTING_FIELDS
COLUMN_ALIASES = {"image_url": "image", "image_path": "image", "audio_url": "audio"}


def _read_csv(uri: str, data: bytes) -> pd.DataFrame:
    """A CSV as strings; a repeated column name or a row with more or fewer cells than the
    header is an error naming the line (pandas would rename or shift silently)."""
    import csv

    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ManifestError(f"manifest {uri} is not UTF-8 text: {exc}") from None
    rows = list(csv.reader(io.StringIO(text)))
    if not rows:
        raise ManifestError(f"manifest {uri} is empty")
    header = [h.strip() for h in rows[0]]
    repeated = sorted({h for h in header if header.count(h) > 1})
    if repeated:
        raise ManifestError(f"manifest {uri} line 1: column(s) {repeated} appear more than once")
    body = []
    for line, row in enumerate(rows[1:], start=2):
        if not row:
            continue  # a blank line
        if len(row) != len(header):
            raise ManifestError(
                f"manifest {uri} line {line}: {len(row)} cells for {len(header)} columns "
                "(a missing or extra comma, or an unquoted comma in a prompt)"
            )
        body.append(row)
    return pd.DataFrame(body, columns=header, dtype=str)


def read_manifest(uri: str) -> pd.DataFrame:
    """Read a manifest into a frame of strings (empty cells are empty strings)."""
    suffix = PurePosixPath(uri.split("?")[0]).suffix.lower()
    try:
        data = read_uri(uri)
    except FileNotFoundError as exc:
        raise ManifestError(f"manifest {uri} not found ({exc})") from None
    try:
        if suffix == ".csv":
            df = _read_csv(uri, data)
        elif suffix in (".parquet", ".pq"):
            df = pd.read_parquet(io.BytesIO(data))
        elif suffix in (".jsonl", ".ndjson"):
            df = pd.read_json(io.BytesIO(data), lines=True, dtype=False)
        else:
            raise ManifestError(
                f"manifest {uri}: unknown format {suffix!r}; use .csv, .parquet or .jsonl"
            )
    except ManifestError:
        raise
    except Exception as exc:
        raise ManifestError(f"manifest {uri} could not be read as {suffix}: {exc}") from None
    df = df.rename(columns={c: COLUMN_ALIASES.get(c.strip(), c.strip()) for c in df.columns})
    missing = {"image", "prompt"} - set(df.columns)
    if missing:
        raise ManifestError(
            f"manifest {uri} lacks column(s) {sorted(missing)}; it has {list(df.columns)}"
        )
    return df


def parse_seed(value: Any) -> int | None:
    """A seed cell as fal takes it (a whole number 0-SEED_MAX), or None: "7", 7 and 7.0 are
    7; 7.9, -1, 1e30, true and "seven" are not seeds (never truncated or coerced)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        text = value.strip()
        if not text.isdigit():
            try:
                number = float(text)
            except ValueError:
                return None
            value = number
        else:
            value = int(text)
    if isinstance(value, float):
        if not value.is_integer():
            return None
        value = int(value)
    if not isinstance(value, int) or not 0 <= value <= schema.SEED_MAX:
        return None
    return value


def cell(value: Any) -> Any:
    """Parquet/JSONL cells may be NaN/None; treat them as empty."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return value


def resolve_ref(ref: str, base: str) -> str:
    """Paths relative to the manifest resolve against it (locally or within its bucket)."""
    if ref.startswith(("data:", "http://", "https://", "s3://", "/")):
        return ref
    ref = ref.removeprefix("file://")
    if base.startswith("s3://"):
        return str(PurePosixPath(base).parent / ref).replace("s3:/", "s3://", 1)
    return os.path.normpath(os.path.join(_folder(base), ref))


@functools.lru_cache(maxsize=64)
def _folder(manifest: str) -> str:
    """The manifest's folder, symlinks resolved (once per manifest: a plan names it 100,000
    times)."""
    return str(Path(manifest).parent.resolve())
