"""The request ledger on a real LocalStore: every job's entry read back, an unreadable entry
named as such, and a damaged one kept aside with the age of its last write."""

from __future__ import annotations

import os
import time

import pytest

from wansweep.errors import LedgerDamaged
from wansweep.run.ledger import Ledger
from wansweep.run.lifecycle import LedgerEntry, LedgerStatus
from wansweep.store import LocalStore
from wansweep.store.layout import ledger_key


def entry(key: str, **fields) -> LedgerEntry:
    return LedgerEntry.from_json({"job_key": key, **fields}, key)


def test_all_reads_every_jobs_entry_by_its_key(tmp_path):
    store = LocalStore(tmp_path)
    ledger = Ledger(store)
    ledger._write(entry("a", status="submitted", request_id="req-a", attempts=1))
    ledger._write(entry("b", status="archived", request_id="req-b", attempts=2))
    store.put_bytes(ledger_key("a") + ".damaged", b"{kept aside")  # not an entry
    found = ledger.all()
    assert set(found) == {"a", "b"} and found["b"] == ledger.get("b")
    assert found["a"].status is LedgerStatus.SUBMITTED and found["a"].request_id == "req-a"
    assert Ledger(LocalStore(tmp_path / "empty")).all() == {}


def test_an_unreadable_entry_is_named_as_damaged_never_read_as_none(tmp_path):
    store = LocalStore(tmp_path)
    store.put_bytes(ledger_key("k1"), b'{"job_key": "k1", "stat')
    with pytest.raises(LedgerDamaged, match="ledger entry of k1 is not valid JSON"):
        Ledger(store).get("k1")


def test_a_damaged_entry_is_kept_aside_with_the_age_of_its_last_write(tmp_path):
    store = LocalStore(tmp_path)
    ledger = Ledger(store)
    store.put_bytes(ledger_key("k1"), b"\x00garbage")
    then = time.time() - 3600
    os.utime(tmp_path / "ledger" / "k1.json", (then, then))
    age = ledger.set_aside("k1")
    assert 3500 < age < 3700  # on the folder's clock: an hour ago
    assert store.get_bytes(ledger_key("k1") + ".damaged") == b"\x00garbage"
    assert ledger.set_aside("gone") is None
