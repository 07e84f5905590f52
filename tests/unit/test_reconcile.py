"""Settling lost submits through fal's records, outside a run (``wansweep reconcile``): each
unsettled entry is found, proven absent or left ambiguous, exactly as fal's records say; a
submit without fal's documented start deadline is never proven absent; nothing is submitted."""

from __future__ import annotations

import json

from wansweep.fal.platform import Lookup
from wansweep.fal.types import Handle
from wansweep.run.ledger import Ledger
from wansweep.run.lifecycle import LedgerEntry, LedgerStatus
from wansweep.run.reconcile import look_up, reconcile_store
from wansweep.store import LocalStore
from wansweep.store.layout import ledger_key, marker_key

FIELDS = {"prompt": "p", "seed": 1}


def handle(rid: str) -> Handle:
    return Handle(rid, f"https://q/{rid}", f"https://q/{rid}/status", f"https://q/{rid}/cancel")


class Records:
    """fal's records as this test scripts them, per job (by the seed in its fields)."""

    def __init__(self, by_seed: dict[int, Lookup], confirmed: set[str] = frozenset()):
        self.by_seed, self.confirmed = by_seed, confirmed
        self.settle_after: dict[int, float] = {}

    def find_submitted(self, endpoint, fields, submitted_at, settle_after, window, earlier):
        self.settle_after[fields["seed"]] = settle_after
        found = self.by_seed[fields["seed"]]
        if found.absent and settle_after == float("inf"):  # as fal's listing: never proven
            return Lookup(None, False, "no start deadline on record")
        return found

    def confirm(self, endpoint, request_id, fields):
        return handle(request_id) if request_id in self.confirmed else None


def seed(store, key: str, **fields) -> None:
    data = {"job_key": key, "endpoint": "e", "submitted_at": 1.0, "attempts": 1, **fields}
    Ledger(store)._write(LedgerEntry.from_json(data, key))


def test_every_unsettled_entry_is_settled_as_fals_records_say(tmp_path):
    store = LocalStore(tmp_path)
    seed(store, "found", status="submitting", fields={**FIELDS, "seed": 1}, deadline_s=600)
    seed(store, "gone", status="ambiguous", fields={**FIELDS, "seed": 2}, deadline_s=600)
    seed(store, "lagging", status="ambiguous", fields={**FIELDS, "seed": 3}, deadline_s=600)
    seed(store, "old", status="submitting", fields={**FIELDS, "seed": 4})  # no deadline sent
    seed(store, "named", status="submitting", fields={**FIELDS, "seed": 5}, deadline_s=600)
    seed(store, "running", status="submitted", fields=FIELDS, handle=handle("r").__dict__)
    seed(store, "nofields", status="submitting")
    store.put_bytes(ledger_key("broken"), b"{not json")
    store.put_bytes(marker_key("named", 1), json.dumps({"request_id": "hooked"}).encode())
    absent = Lookup(None, True, "never taken")
    records = Records(
        {
            1: Lookup(handle("r1"), False, "found"),
            2: absent,
            3: Lookup(None, False, "not listed yet"),
            4: absent,  # what a listing would say; without a deadline it proves nothing
            5: Lookup(None, False, "not listed yet"),
        },
        confirmed={"hooked"},
    )
    counts = reconcile_store(store, records, settle_after=900)
    assert counts == {"found": 2, "absent": 1, "ambiguous": 2, "damaged": 1}
    ledger = Ledger(store)
    assert ledger.get("found").status is LedgerStatus.SUBMITTED
    assert ledger.get("found").request_id == "r1" and ledger.get("found").reconciled
    assert ledger.get("named").request_id == "hooked"  # its verified webhook, confirmed
    assert ledger.get("gone").status is LedgerStatus.RETRYING
    assert ledger.get("gone").retries("absent") == 1
    assert ledger.get("gone").error == "never taken"  # why it may be paid for again
    assert ledger.get("lagging").status is LedgerStatus.AMBIGUOUS
    assert records.settle_after[4] == float("inf")  # never provably absent
    assert records.settle_after[2] == 900
    assert ledger.get("old").status is LedgerStatus.AMBIGUOUS  # the 'absent' was not believed
    assert ledger.get("running").status is LedgerStatus.SUBMITTED  # settled ones untouched
    assert ledger.get("nofields").status is LedgerStatus.SUBMITTING


def test_settled_entries_are_left_alone_however_they_look_and_each_damaged_one_counts(tmp_path):
    store = LocalStore(tmp_path)
    # settled, without a handle but with fields: nothing to ask fal about any of them
    for n, status in enumerate(["retrying", "failed", "expired", "cancelled", "archived"]):
        seed(store, status, status=status, fields={**FIELDS, "seed": n}, deadline_s=600)
    store.put_bytes(ledger_key("broken-1"), b"{not json")
    store.put_bytes(ledger_key("broken-2"), b"[]")
    records = Records({})  # asked about anything, it fails the test
    assert reconcile_store(store, records, settle_after=900) == {"damaged": 2}
    assert records.settle_after == {}


class Asked:
    """fal's records, keeping every question look_up asks them."""

    def __init__(self, confirmed: set[str] = frozenset()):
        self.confirmed, self.calls = confirmed, []

    def confirm(self, endpoint, request_id, fields):
        self.calls.append(("confirm", endpoint, request_id, fields))
        return handle(request_id) if request_id in self.confirmed else None

    def find_submitted(self, endpoint, fields, submitted_at, settle_after, window, earlier):
        self.calls.append(("list", endpoint, fields, submitted_at, settle_after))
        return Lookup(None, False, "not listed yet")


def entry(**fields) -> LedgerEntry:
    data = {"job_key": "j", "endpoint": "fal-ai/wan", "submitted_at": 1234.5, "attempts": 1}
    return LedgerEntry.from_json({**data, "status": "submitting", **fields}, "j")


def test_a_request_its_webhook_named_is_confirmed_for_this_jobs_endpoint_and_fields(tmp_path):
    store = LocalStore(tmp_path)
    store.put_bytes(marker_key("j", 1), json.dumps({"request_id": "hooked"}).encode())
    fal = Asked(confirmed={"hooked"})
    found = look_up(fal, store, "j", entry(), FIELDS, settle_after=900)
    assert found.handle.request_id == "hooked"
    # found is never 'absent': that would give its hold back while fal bills it
    assert not found.absent
    assert fal.calls == [("confirm", "fal-ai/wan", "hooked", FIELDS)]  # no listing needed


def test_without_a_webhook_fal_is_asked_nothing_but_its_listing(tmp_path):
    fal = Asked()
    look_up(fal, LocalStore(tmp_path), "j", entry(deadline_s=600), FIELDS, settle_after=900)
    # searched for this job's endpoint and fields, from the time its submit was sent
    assert fal.calls == [("list", "fal-ai/wan", FIELDS, 1234.5, 900)]


def test_a_listing_proves_absence_only_once_settle_after_runs_past_the_deadline(tmp_path):
    store, fal = LocalStore(tmp_path), Asked()
    look_up(fal, store, "j", entry(deadline_s=600), FIELDS, settle_after=600)
    look_up(fal, store, "j", entry(deadline_s=600), FIELDS, settle_after=601)
    assert [call[-1] for call in fal.calls] == [float("inf"), 601]
