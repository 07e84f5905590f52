"""The media index: what planning found in each input file, remembered in the store.

A re-plan of a dataset must not download what it has already checked. For each source URI
the index keeps the content hash and the problems validation found, beside a *validator*:
what proves the bytes unchanged, taken before they were read.

- ``s3://``: ETag and size (one listing per folder when many inputs share it, else a HEAD)
- ``http(s)://``: a strong ETag, or a Last-Modified at least 60 s older than the answer's
  Date (RFC 9110's rule for when a date is a strong validator), and Content-Length (a HEAD)
- local paths: size and modification time (ns), once the file is 2 s old (a file written
  within the same clock tick as the plan could change again unseen: git's "racy" case)

An entry is used only when it is well-formed and its validator equals the current one.
Opt-in (``trust_http_cache`` in the spec), an http(s) entry is also used without a HEAD while
the answer it was taken from is still fresh by that answer's own ``Cache-Control: max-age``
or ``Expires`` (RFC 9111, explicit freshness only; ``no-cache``/``no-store`` never): the
origin's promise replaces the check. Off by default because an origin that changes a file
within its max-age would have the job planned, and paid for, under the old bytes' key.
Anything else (new, changed, damaged, or no validator: a server that sends neither ETag nor
Last-Modified, a ``data:`` URI) means fetch, decode and hash again; a changed image gets a
new job key, as always. Failed fetches are never remembered.

Stored as one gzipped JSON-lines object (:data:`MEDIA_INDEX_KEY`), read once and written once per
plan. A damaged line is skipped and a damaged file rebuilt; an index written by another
version of wansweep is not used (its validation rules may differ). Two plans writing it at once can
only lose each other's entries (re-checked next time), never make one wrong: the validator
is read before the bytes, so bytes that change in between are stored under the old
validator, which no longer matches.
"""

from __future__ import annotations

import gzip
import json
import logging
import math
import os
import time
from collections import defaultdict
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

from wansweep import __version__
from wansweep.plan import schema
from wansweep.store import Store, s3_client, s3_location
from wansweep.store.layout import MEDIA_INDEX_KEY

log = logging.getLogger(__name__)

LIST_AT = 20  # inputs under one S3 folder from which one listing beats a HEAD each
PAGE = 1000  # keys in one S3 listing page
LIST_RANGES = 8  # ranges of one folder listed at once (see _listed)
RACY_S = 2.0  # a local file younger than this is checked again
HEADER = {"media_index": 1, "wansweep": __version__}  # the first line of the index


@dataclass(frozen=True)
class Validator:
    """What proves an input's bytes unchanged (``token``, compared for equality), and for an
    http(s) answer, until when (epoch seconds) that answer is fresh by its own headers."""

    token: str
    fresh_until: float | None = None


@dataclass(frozen=True)
class Checked:
    """What validation found in one input: its content hash, or the problems that stop it."""

    uri: str
    sha256: str | None
    problems: tuple[schema.Problem, ...]


class MediaIndex:
    """Thread-safe for lookups; :meth:`remember` and :meth:`save` from one thread."""

    def __init__(self, store: Store | None):
        self.store = store
        self._entries: dict[tuple[str, str], dict] = {}
        self._dirty = False
        if store is not None:
            self._load()

    def _load(self) -> None:
        try:
            raw = self.store.get_bytes(MEDIA_INDEX_KEY)
            lines = gzip.decompress(raw).decode().splitlines() if raw else []
        except Exception as exc:  # noqa: BLE001 (a damaged index is rebuilt, never trusted)
            log.warning("media index unreadable (%s): every input is checked again", exc)
            self._dirty = True
            return
        if lines and _header(lines[0]) != HEADER:
            self._dirty = True  # another version's checks: check again under today's rules
            return
        for line in lines[1:]:
            try:
                e = json.loads(line)
                key = (str(e["uri"]), str(e["kind"]))
                if not (isinstance(e["validator"], str) and isinstance(e["problems"], list)):
                    raise TypeError("bad entry")
                fresh = e.get("fresh_until")
                if fresh is not None and not (isinstance(fresh, float) and math.isfinite(fresh)):
                    raise TypeError("bad freshness")
                if e["sha256"] is not None and not _is_sha256(e["sha256"]):
                    raise ValueError("bad hash")
                problems = tuple(schema.Problem(**p) for p in e["problems"])
            except Exception:  # noqa: BLE001 (one damaged line is skipped, rebuilt on save)
                self._dirty = True
                continue
            self._entries[key] = {**e, "problems": problems}

    def lookup(self, uri: str, kind: str, validator: Validator | None) -> Checked | None:
        """The remembered check of ``uri`` when ``validator`` proves its bytes unchanged."""
        e = self._entries.get((uri, kind))
        if validator is None or e is None or e["validator"] != validator.token:
            return None
        return Checked(uri, e["sha256"], e["problems"])

    def fresh(self, uri: str, kind: str, now: float) -> Checked | None:
        """The remembered check of ``uri`` while the answer it came from is fresh (for
        ``trust_http_cache`` only: no request proves the bytes unchanged)."""
        e = self._entries.get((uri, kind))
        if e is None or e.get("fresh_until") is None or now >= e["fresh_until"]:
            return None
        return Checked(uri, e["sha256"], e["problems"])

    def knows(self, uri: str, kind: str) -> bool:
        return (uri, kind) in self._entries

    def remember(self, kind: str, validator: Validator, checked: Checked) -> None:
        """Keep ``checked`` under ``validator`` (a revalidated entry: its new freshness)."""
        entry = {
            "uri": checked.uri,
            "kind": kind,
            "validator": validator.token,
            "fresh_until": validator.fresh_until,
            "sha256": checked.sha256,
            "problems": checked.problems,
        }
        if self._entries.get((checked.uri, kind)) != entry:
            self._entries[(checked.uri, kind)] = entry
            self._dirty = True

    def save(self) -> None:
        """Write the index back (best effort: a store that refuses it costs a re-check)."""
        if self.store is None or not self._dirty:
            return
        lines = [json.dumps(HEADER)] + [
            json.dumps({**e, "problems": [p.__dict__ for p in e["problems"]]})
            for e in self._entries.values()
        ]
        try:
            self.store.put_bytes(MEDIA_INDEX_KEY, gzip.compress("\n".join(lines).encode(), 5))
            self._dirty = False
        except Exception as exc:  # noqa: BLE001
            log.warning("media index not saved (%s): the next plan checks every input", exc)


def _header(line: str) -> dict | None:
    try:
        return json.loads(line)
    except ValueError:
        return None


def _is_sha256(value: object) -> bool:
    return (
        isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)
    )


# ---------------------------------------------------------------------- validators
def read_with_validator(uri: str) -> tuple[bytes, Validator | None]:
    """An input's bytes and the validator that came with them (one request: a cold plan
    asks nothing more than the bytes). Errors as the fetch raises them."""
    from wansweep.media.fetch import MAX_BYTES, FetchRefused, fetch_url, read_local

    if uri.startswith("data:"):
        from wansweep.media.frames import decode_data_uri

        return decode_data_uri(uri), None
    if uri.startswith(("http://", "https://")):
        received = time.time()
        data, headers = fetch_url(uri)
        return data, _http_validator(headers, received)
    if uri.startswith("s3://"):
        bucket, key = s3_location(uri)
        client = s3_client()
        try:
            answer = client.get_object(Bucket=bucket, Key=key)
        except (client.exceptions.NoSuchKey, client.exceptions.NoSuchBucket):
            raise FileNotFoundError(f"{uri}: no such object") from None
        if answer["ContentLength"] > MAX_BYTES:
            raise FetchRefused(f"{uri}: {answer['ContentLength']} bytes, over the limit")
        return answer["Body"].read(), Validator(f"s3:{answer['ETag']}:{answer['ContentLength']}")
    path = uri.removeprefix("file://")
    mark = _validator(path)  # before the read: bytes changed meanwhile will not match it
    return read_local(path), mark


def load_media(uri: str) -> bytes:
    """An input's bytes, within the bounds of :mod:`wansweep.media.fetch` (S3 objects included)."""
    return read_with_validator(uri)[0]


def validators(uris: Iterable[str], pool: ThreadPoolExecutor) -> dict[str, Validator | None]:
    """The current validator of each URI (None where there is none or it cannot be read:
    that input is then fetched, and its fetch reports any error)."""
    uris = set(uris)
    out: dict[str, Validator | None] = {u: None for u in uris}
    s3_groups: dict[tuple[str, str], list[str]] = defaultdict(list)
    single: list[str] = []
    for uri in uris:
        if uri.startswith("s3://"):
            bucket, key = s3_location(uri)
            folder = key.rpartition("/")[0]
            s3_groups[(bucket, folder + "/" if folder else "")].append(uri)
        elif uri.startswith(("http://", "https://")):
            single.append(uri)
        elif not uri.startswith("data:"):  # a local stat costs less than handing it to a thread
            out[uri] = _validator(uri)
    for (bucket, prefix), members in s3_groups.items():
        if len(members) >= LIST_AT:
            out.update(_listed(bucket, prefix, members, pool))
        else:
            single += members
    out.update(zip(single, pool.map(_validator, single)))
    return out


def _validator(uri: str) -> Validator | None:
    try:
        if uri.startswith("s3://"):
            bucket, key = s3_location(uri)
            head = s3_client().head_object(Bucket=bucket, Key=key)
            return Validator(f"s3:{head['ETag']}:{head['ContentLength']}")
        if uri.startswith(("http://", "https://")):
            from wansweep.media.fetch import head_url

            received = time.time()
            headers = head_url(uri)
            return _http_validator(headers, received) if headers is not None else None
        st = os.stat(uri.removeprefix("file://"))
        if time.time() - st.st_mtime < RACY_S:
            return None
        return Validator(f"local:{st.st_size}:{st.st_mtime_ns}")
    except Exception:  # noqa: BLE001 (no validator: the input is fetched, errors show there)
        return None


def _http_validator(headers, received: float) -> Validator | None:
    """An http(s) answer's validator (``received``: when it was asked for, our clock)."""
    etag, modified = headers.get("etag", ""), headers.get("last-modified", "")
    length = headers.get("content-length", "")
    if etag and not etag.startswith("W/"):  # a weak ETag does not promise the same bytes
        return Validator(f"http:{etag}:{length}", fresh_until(headers, received))
    try:
        age = parsedate_to_datetime(headers["date"]) - parsedate_to_datetime(modified)
    except (KeyError, TypeError, ValueError):
        return None
    if age.total_seconds() < 60:
        return None
    return Validator(f"http:{modified}:{length}", fresh_until(headers, received))


def fresh_until(headers, received: float) -> float | None:
    """Until when (epoch seconds) an answer stays fresh by its own headers, RFC 9111 4.2 as a
    private cache: ``max-age`` (else ``Expires`` - ``Date``) less the answer's age when it
    left the origin (``Age``, or how far its ``Date`` lies behind ``received``). None when
    the answer says nothing explicit (no heuristic freshness), forbids reuse (``no-cache``,
    ``no-store``) or is already stale; a malformed value counts as stale."""
    directives = {}
    for part in headers.get("cache-control", "").lower().split(","):
        name, _, value = part.strip().partition("=")
        directives[name] = value.strip().strip('"')
    if "no-cache" in directives or "no-store" in directives:
        return None
    try:
        date = _epoch(headers.get("date")) if headers.get("date") else received
        if "max-age" in directives:
            lifetime = int(directives["max-age"])
        elif headers.get("expires"):
            lifetime = _epoch(headers["expires"]) - date
        else:
            return None
        age = max(int(headers.get("age") or 0), received - date, 0)
    except (TypeError, ValueError, OverflowError):
        return None
    return float(received - age + lifetime) if lifetime > age else None


def _epoch(http_date: str) -> float:
    return parsedate_to_datetime(http_date).timestamp()


def _listed(
    bucket: str, prefix: str, members: list[str], pool: ThreadPoolExecutor
) -> dict[str, Validator | None]:
    """Validators of many objects in one folder from its listing (1 request per 1,000).

    A listing is a chain of pages, each waiting for the last; the folder is cut into up to
    ``LIST_RANGES`` ranges at the wanted keys and the ranges are listed at once, each from
    just after the previous range's last wanted key (``StartAfter``) to its own last one, so
    the pages of a 100,000-object folder come in parallel and nothing past the last wanted
    key is listed. A range that fails leaves its members without a validator (fetched)."""
    keys = sorted(s3_location(u)[1] for u in members)  # S3 lists in UTF-8 order
    ranges = max(1, min(LIST_RANGES, len(keys) // (2 * PAGE)))
    bounds = [keys[len(keys) * i // ranges - 1] if i else None for i in range(ranges)]
    ends = [keys[len(keys) * (i + 1) // ranges - 1] for i in range(ranges)]

    def one(after: str | None, last: str) -> dict[str, Validator]:
        found: dict[str, Validator] = {}
        extra = {"StartAfter": after} if after else {}
        try:
            pages = s3_client().get_paginator("list_objects_v2")
            pages = pages.paginate(
                Bucket=bucket,
                Prefix=prefix,
                Delimiter="/",
                PaginationConfig={"PageSize": PAGE},
                **extra,
            )
            for page in pages:
                for obj in page.get("Contents", []):
                    found[obj["Key"]] = Validator(f"s3:{obj['ETag']}:{obj['Size']}")
                if page.get("Contents") and page["Contents"][-1]["Key"] >= last:
                    break
        except Exception:  # noqa: BLE001 (no validator: those inputs are fetched)
            return {}
        return found

    found: dict[str, Validator] = {}
    for part in pool.map(one, bounds, ends):
        found.update(part)
    return {u: found.get(s3_location(u)[1]) for u in members}
