"""The media index: a re-plan downloads only what changed, and a damaged index is never
trusted (local files and a LocalStore; S3 and HTTP in tests/integration/test_scale.py)."""

from __future__ import annotations

import gzip
import json
import os

import pytest
import yaml

from tests.helpers import make_image
from wansweep.plan.planner import plan
from wansweep.plan.spec import load_spec
from wansweep.store import LocalStore
from wansweep.store.layout import MEDIA_INDEX_KEY as INDEX_KEY


@pytest.fixture
def case(tmp_path):
    for i in range(6):
        (tmp_path / f"i{i}.png").write_bytes(make_image(320, 240, seed=i))
    (tmp_path / "bad.png").write_bytes(make_image(320, 240, seed=9)[:300])  # truncated
    rows = [f"r{i},i{i}.png,prompt {i}" for i in range(6)] + ["rb,bad.png,broken"]
    (tmp_path / "m.csv").write_text("id,image,prompt\n" + "\n".join(rows) + "\n")
    for path in tmp_path.glob("*.png"):
        age(path)
    (tmp_path / "spec.yaml").write_text(
        yaml.safe_dump({"name": "u", "endpoints": ["flash"], "grid": {"resolution": ["720p"]}})
    )
    return tmp_path


def age(path, seconds=3600):
    """Date a file in the past: a file just written is re-checked (see RACY_S)."""
    t = path.stat().st_mtime_ns - seconds * 10**9
    os.utime(path, ns=(t, t))


def planned(case):
    store = LocalStore(case / "archive")
    return plan(load_spec(case / "spec.yaml"), str(case / "m.csv"), index_store=store), store


def keys_by_row(p):
    return {j.row_id: j.job_key for j in p.jobs}


def test_a_warm_plan_reads_no_input_and_plans_the_same(case):
    cold, _ = planned(case)
    assert (cold.media_fetched, cold.media_reused) == (7, 0)
    warm, _ = planned(case)
    assert (warm.media_fetched, warm.media_reused) == (0, 7)
    assert keys_by_row(warm) == keys_by_row(cold)
    # problems are remembered too: the truncated image is still refused, without a download
    assert [(p.id, p.rule) for p in warm.errors] == [("rb", "image_truncated")]


def test_a_changed_image_is_checked_again_and_gets_a_new_job_key(case):
    cold, _ = planned(case)
    path = case / "i2.png"
    old = path.stat().st_mtime_ns
    path.write_bytes(make_image(320, 240, seed=77))
    os.utime(path, ns=(old + 1_000, old + 1_000))  # a microsecond apart is enough
    warm, _ = planned(case)
    assert (warm.media_fetched, warm.media_reused) == (1, 6)
    before, after = keys_by_row(cold), keys_by_row(warm)
    assert {r for r in before if before[r] != after[r]} == {"r2"}


@pytest.mark.parametrize(
    "damage",
    [
        lambda raw: b"not gzip at all",
        lambda raw: gzip.compress(  # the first entry cut short
            b"\n".join(
                line[20:] if i == 1 else line
                for i, line in enumerate(gzip.decompress(raw).splitlines())
            )
        ),
        lambda raw: gzip.compress(  # written by another version
            gzip.decompress(raw).replace(b'"wansweep": "', b'"wansweep": "0.0.0-', 1)
        ),
        lambda raw: gzip.compress(
            "\n".join(
                json.dumps({**e, "sha256": "0" * 63 + "g"} if i else e)  # hashes that are none
                for i, e in enumerate(map(json.loads, gzip.decompress(raw).decode().splitlines()))
            ).encode()
        ),
    ],
    ids=["unreadable", "a-damaged-line", "another-version", "forged-hashes"],
)
def test_a_damaged_index_is_ignored_and_rebuilt(case, damage):
    cold, store = planned(case)
    store.put_bytes(INDEX_KEY, damage(store.get_bytes(INDEX_KEY)))
    again, _ = planned(case)
    assert keys_by_row(again) == keys_by_row(cold)
    assert again.media_fetched >= 1  # nothing it could not vouch for was trusted
    warm, _ = planned(case)  # and it was written back whole
    assert (warm.media_fetched, warm.media_reused) == (0, 7)


def test_a_file_written_just_now_is_checked_again(case):
    (case / "i3.png").write_bytes(make_image(320, 240, seed=3))  # same bytes, mtime now
    planned(case)
    warm, _ = planned(case)
    assert warm.media_fetched == 1  # until it is older than a clock tick could hide


def test_an_entry_for_other_bytes_is_not_used(case):
    planned(case)
    store = LocalStore(case / "archive")
    header, *entries = [
        json.loads(x) for x in gzip.decompress(store.get_bytes(INDEX_KEY)).splitlines()
    ]
    for e in entries:
        e["validator"] = "local:1:1"  # recorded for a file of another size and time
    entries.insert(0, header)
    store.put_bytes(INDEX_KEY, gzip.compress("\n".join(map(json.dumps, entries)).encode()))
    again, _ = planned(case)
    assert again.media_fetched == 7


NOW = 1_800_000_000.0  # when the request was sent (our clock)


def http_date(t: float) -> str:
    from email.utils import formatdate

    return formatdate(t, usegmt=True)


@pytest.mark.parametrize(
    "headers, until",
    [
        ({"cache-control": "max-age=600", "date": http_date(NOW)}, NOW + 600),
        ({"cache-control": "public, max-age=600"}, NOW + 600),  # no Date: taken as sent now
        ({"cache-control": "max-age=600", "age": "100", "date": http_date(NOW)}, NOW + 500),
        # an answer dated 100 s before we asked was already 100 s old (a proxy's copy)
        ({"cache-control": "max-age=600", "date": http_date(NOW - 100)}, NOW + 500),
        ({"cache-control": 's-maxage=9999, max-age="60"'}, NOW + 60),  # a shared cache's: not ours
        ({"expires": http_date(NOW + 300), "date": http_date(NOW)}, NOW + 300),
        (
            {"cache-control": "max-age=600", "expires": http_date(NOW + 9)},
            NOW + 600,
        ),  # max-age wins
        ({"cache-control": "max-age=600, no-cache"}, None),
        ({"cache-control": "no-store, max-age=600"}, None),
        ({"cache-control": "max-age=100", "age": "100"}, None),  # stale on arrival
        ({"cache-control": "max-age=soon"}, None),
        ({"expires": "0", "date": http_date(NOW)}, None),  # malformed Expires: stale
        ({"expires": http_date(NOW - 5), "date": http_date(NOW)}, None),
        ({"last-modified": http_date(NOW - 86400)}, None),  # no heuristic freshness
        ({}, None),
    ],
)
def test_freshness_is_what_the_answer_says_explicitly(headers, until):
    from wansweep.plan.media_index import fresh_until

    assert fresh_until(headers, NOW) == until


def test_freshness_is_only_trusted_when_the_spec_says_so(case):
    """Local files have no freshness: trust_http_cache changes nothing for them, and an index
    entry with a malformed freshness is dropped like any damaged entry."""
    cold, store = planned(case)
    raw = gzip.decompress(store.get_bytes(INDEX_KEY)).decode().splitlines()
    entries = [json.loads(line) for line in raw[1:]]
    assert entries and all(e["fresh_until"] is None for e in entries)
    entries[0]["fresh_until"] = "forever"
    store.put_bytes(
        INDEX_KEY, gzip.compress("\n".join(raw[:1] + [json.dumps(e) for e in entries]).encode())
    )
    spec = yaml.safe_load((case / "spec.yaml").read_text())
    (case / "spec.yaml").write_text(yaml.safe_dump({**spec, "trust_http_cache": True}))
    warm, _ = planned(case)
    assert (warm.media_fetched, warm.media_reused) == (1, 6)


def test_an_index_row_says_which_metric_version_measured_the_clip():
    from wansweep.results.index import sidecar_row

    base = {"job_key": "k"}
    assert sidecar_row({**base, "quality": {"version": 2, "cuts": 1}})["quality_version"] == 2
    assert sidecar_row({**base, "quality": {"cuts": 1}})["quality_version"] == 1  # before versions
    assert sidecar_row(base)["quality_version"] is None  # not measured
