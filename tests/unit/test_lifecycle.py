"""A job's life as typed state: what each status means for money (the one billing rule), and a
ledger entry that reads back as written, or as damaged, never half-trusted."""

from __future__ import annotations

import pytest

from wansweep.errors import FailureKind, LedgerDamaged
from wansweep.fal.types import Handle
from wansweep.run.lifecycle import Billing, LedgerEntry, LedgerStatus, billing
from wansweep.run.transitions import Move, apply

S = LedgerStatus


@pytest.mark.parametrize(
    "status, kind, ran, expected",
    [
        ("succeeded", None, None, Billing.BILLED),
        (S.ARCHIVED, None, None, Billing.BILLED),
        (S.COMPLETED, None, None, Billing.BILLED),
        (S.CANCELLED, None, False, Billing.NOT_BILLED),  # dropped from the queue
        (S.CANCELLED, None, True, Billing.MAYBE),  # it was running: it may finish
        (S.CANCELLED, None, None, Billing.MAYBE),
        (S.EXPIRED, FailureKind.EXPIRED, None, Billing.MAYBE),
        (S.FAILED, FailureKind.INVALID, None, Billing.MAYBE),  # a 422 after GPU time
        (S.FAILED, FailureKind.FAILED, None, Billing.NOT_BILLED),  # 5xx: never billed
        (S.FAILED, FailureKind.REJECTED, None, Billing.NOT_BILLED),
        (S.AMBIGUOUS, None, None, Billing.UNKNOWN),
        (S.SUBMITTING, None, None, Billing.UNKNOWN),
        (S.SUBMITTED, None, None, Billing.UNKNOWN),
        ("damaged", None, None, Billing.UNKNOWN),
        (S.RETRYING, None, None, Billing.NOT_BILLED),
        ("pending", None, None, Billing.NOT_BILLED),
    ],
)
def test_the_one_billing_rule(status, kind, ran, expected):
    assert billing(status, kind, ran) is expected


def test_an_entry_reads_back_as_it_was_written():
    handle = Handle("r", "https://q/r", "https://q/r/status", "https://q/r/cancel")
    entry = apply(
        LedgerEntry("k"), Move.SUBMIT, attempts=1, deadline_s=600.0, repaid=("ambiguous",)
    )
    entry = apply(entry, Move.ACCEPT, handle=handle, request_id="r", billable_units="7.5")
    again = LedgerEntry.from_json(entry.to_json(), "k")
    assert again == entry


@pytest.mark.parametrize(
    "data",
    [
        [],
        {"job_key": "other"},
        {"job_key": "k", "status": "levitating"},
        {"job_key": "k", "error_kind": "sideways"},
        {"job_key": "k", "handle": {"request_id": "r"}},
        {"job_key": "k", "history": [["submitted"]]},
    ],
)
def test_a_damaged_entry_is_refused_whole(data):
    with pytest.raises(LedgerDamaged):
        LedgerEntry.from_json(data, "k")
