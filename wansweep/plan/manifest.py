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
from wansweep.plan import endpoints, schema
from wansweep.store import read_uri

CELL_MAX = 4 * 2**20  # characters of one CSV cell read at most (a prompt is far shorter)
KNOWN_COLUMNS = {
    "id",
    "image",
    "prompt",
    "negative_prompt",
    "audio",
    "seed",
} | set(endpoints.SETTINGS)
COLUMN_ALIASES = {"image_url": "image", "image_path": "image", "audio_url": "audio"}


def _read_csv(uri: str, data: bytes) -> pd.DataFrame:
    """A CSV as strings; a repeated column name or a row with more or fewer cells than the
    header is an error naming the line (pandas would rename or shift silently)."""
    import csv

    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ManifestError(f"manifest {uri} is not UTF-8 text: {exc}") from None
    csv.field_size_limit(CELL_MAX)  # a long prompt is a row's error, not the file's
    reader = csv.reader(io.StringIO(text))
    try:
        rows = list(reader)
    except csv.Error as exc:
        raise ManifestError(f"manifest {uri} line {reader.line_num}: {exc}") from None
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


def _read_jsonl(uri: str, data: bytes) -> pd.DataFrame:
    """JSON lines, each an object; an error names its line."""
    import json

    records = []
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ManifestError(f"manifest {uri} is not UTF-8 text: {exc}") from None
    for line, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except ValueError as exc:
            raise ManifestError(f"manifest {uri} line {line}: not JSON ({exc})") from None
        if not isinstance(record, dict):
            raise ManifestError(f"manifest {uri} line {line}: a line must be a JSON object")
        records.append(record)
    if not records:
        raise ManifestError(f"manifest {uri} is empty")
    return pd.DataFrame.from_records(records)


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
            df = _read_jsonl(uri, data)
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
    """A cell as plain Python: Parquet/JSONL cells may be NaN, None or pandas' NA (empty) or a
    NumPy scalar (its Python value); anything else as it is."""
    if getattr(value, "ndim", None) == 0 and hasattr(value, "item"):
        value = value.item()  # a NumPy scalar
    if value is None or value is pd.NA or value is pd.NaT:
        return ""
    if isinstance(value, float) and math.isnan(value):
        return ""
    return value


def cell_problem(column: str, value: Any) -> schema.Problem | None:
    """Why a cell of a column wansweep reads cannot be used (None: it can): a Parquet or JSONL
    cell may hold a list, a mapping or bytes where one value belongs, and text may hold NUL."""
    if isinstance(value, (list, tuple, dict, set)) or getattr(value, "ndim", 0):
        kind = "a mapping" if isinstance(value, dict) else "a list"
        return schema.Problem(column, "not_one_value", f"{kind} where one value belongs")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return schema.Problem(column, "bytes", "bytes where text or a number belongs")
    if isinstance(value, str) and (
        "\x00" in value or any(ord(c) < 32 and c not in "\t\n\r" for c in value)
    ):
        return schema.Problem(column, "control_character", "holds a NUL or control character")
    return None


def metadata_value(column: str, value: Any) -> tuple[Any, schema.Problem | None]:
    """An extra column's cell as the sidecar keeps it: text and numbers as they are, a list or
    mapping as JSON; bytes refused (no metadata of a sidecar is binary)."""
    import json

    if isinstance(value, (bytes, bytearray, memoryview)):
        return None, schema.Problem(column, "bytes", "bytes cannot be kept as metadata")
    if hasattr(value, "tolist"):  # a numpy array or scalar, from Parquet
        value = value.tolist()
    if isinstance(value, (list, tuple, dict)):
        try:
            return json.dumps(value, default=str, ensure_ascii=False), None
        except (TypeError, ValueError):
            return None, schema.Problem(column, "not_json", "cannot be kept as JSON metadata")
    return value, None


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
