"""The state table of a job's ledger: every move from every status is either the table's or
refused; no code but the transitions module sets a status; and the step each entry calls for."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from wansweep.errors import FailureKind, IllegalMove
from wansweep.fal.types import Handle
from wansweep.plan.spec import RunSettings
from wansweep.run.lifecycle import Cause, LedgerEntry, LedgerStatus
from wansweep.run.steps import Step, next_step
from wansweep.run.transitions import TABLE, Move, apply

STATUSES = [None, *LedgerStatus]
HANDLE = Handle("r", "https://q/r", "https://q/r/status", "https://q/r/cancel")


def entry_in(status: LedgerStatus | None, **fields) -> LedgerEntry:
    data = {"job_key": "k", "status": status and str(status), **fields}
    return LedgerEntry.from_json(data, "k")


@pytest.mark.parametrize("move", list(Move))
@pytest.mark.parametrize("status", STATUSES, ids=lambda s: str(s or "none"))
def test_every_move_from_every_status_is_the_tables_or_refused(move, status):
    sources, target = TABLE[move]
    before = entry_in(status, attempts=1)
    if status in sources:
        after = apply(before, move, Cause.FAILED, attempts=2)
        assert after.status is target and after.attempts == 2
        assert after.history[-1][0] == target and after.history[-1][2] == "failed"
        assert len(after.history) == len(before.history) + 1
    else:
        with pytest.raises(IllegalMove, match=str(move)):
            apply(before, move)


def test_every_status_can_be_reached_and_archived_only_from_completed():
    reached = {target for _, target in TABLE.values()}
    assert reached == set(LedgerStatus)
    done = {LedgerStatus.COMPLETED, LedgerStatus.EXPIRED, LedgerStatus.ARCHIVED}
    assert TABLE[Move.ARCHIVE][0] == done
    # archived is left only when the archive lost its copy: repaired, paid again or ended
    leaving = {m for m, (sources, _) in TABLE.items() if LedgerStatus.ARCHIVED in sources}
    assert leaving == {Move.ARCHIVE, Move.RETRY, Move.FAIL, Move.EXPIRE}


def test_a_status_cannot_be_set_as_a_field():
    with pytest.raises(TypeError, match="transitions"):
        entry_in(None).with_changes(status=LedgerStatus.ARCHIVED)
    with pytest.raises(TypeError):
        entry_in(None).with_changes(history=())


REPO = Path(__file__).resolve().parents[2]


def test_no_module_but_transitions_sets_a_status():
    """Any call passing ``status=`` to something that makes or changes a ledger entry
    (``replace``, ``with_changes``, ``put``, ``LedgerEntry``), outside the transitions module."""
    makers = {"replace", "with_changes", "put", "LedgerEntry", "_write"}
    wrong = []
    for path in sorted((REPO / "wansweep").rglob("*.py")):
        if path.name == "transitions.py" or "localfal" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in makers and any(k.arg == "status" for k in node.keywords):
                wrong.append(f"{path.relative_to(REPO)}:{node.lineno} {name}(status=...)")
    assert not wrong, "\n".join(wrong)


SETTINGS = RunSettings(max_attempts=2)
FLAGS = RunSettings(max_attempts=2, resubmit_ambiguous=True, resubmit_expired=True)


@pytest.mark.parametrize(
    "status, fields, settings, step",
    [
        (None, {}, SETTINGS, Step.SUBMIT),
        (LedgerStatus.RETRYING, {"attempts": 1}, SETTINGS, Step.SUBMIT),
        (LedgerStatus.RETRYING, {"attempts": 2}, SETTINGS, Step.GIVE_UP),
        (LedgerStatus.RETRYING, {"attempts": 2, "repaid": ["ambiguous"]}, SETTINGS, Step.SUBMIT),
        (LedgerStatus.RETRYING, {"attempts": 3, "repaid": ["ambiguous"]}, SETTINGS, Step.GIVE_UP),
        (LedgerStatus.SUBMITTING, {"attempts": 1}, SETTINGS, Step.SETTLE),
        (LedgerStatus.AMBIGUOUS, {"attempts": 1}, SETTINGS, Step.SETTLE),
        (LedgerStatus.SUBMITTED, {"handle": HANDLE.__dict__}, SETTINGS, Step.WAIT),
        (LedgerStatus.CANCELLED, {"handle": HANDLE.__dict__}, SETTINGS, Step.WAIT),
        (LedgerStatus.COMPLETED, {"result": {"video": {}}}, SETTINGS, Step.DONE),
        (LedgerStatus.ARCHIVED, {"result": {"video": {}}}, SETTINGS, Step.DONE),
        (LedgerStatus.FAILED, {"attempts": 1, "error_kind": "failed"}, SETTINGS, Step.REOPEN),
        (LedgerStatus.FAILED, {"attempts": 2, "error_kind": "failed"}, SETTINGS, Step.GIVE_UP),
        (LedgerStatus.FAILED, {"attempts": 1, "error_kind": "invalid"}, SETTINGS, Step.GIVE_UP),
        (LedgerStatus.EXPIRED, {"attempts": 1}, SETTINGS, Step.GIVE_UP),
        (LedgerStatus.EXPIRED, {"attempts": 1, "result": {"video": {}}}, SETTINGS, Step.DONE),
        (LedgerStatus.EXPIRED, {"attempts": 1}, FLAGS, Step.REOPEN),
        (LedgerStatus.EXPIRED, {"attempts": 2, "repaid": ["expired"]}, FLAGS, Step.GIVE_UP),
    ],
)
def test_the_step_each_entry_calls_for(status, fields, settings, step):
    assert next_step(entry_in(status, **fields), settings) is step


def test_failure_kinds_and_causes_share_their_names():
    """A failure's kind is recorded as the cause of the move it leads to."""
    for kind in FailureKind:
        if kind is not FailureKind.AMBIGUOUS:
            assert Cause(kind.value)


def test_a_refused_move_names_the_job_the_move_and_the_statuses_it_is_allowed_from():
    """What a maintainer reads when a hand-edited ledger or a bug asks for a forbidden move."""
    with pytest.raises(IllegalMove) as refused:
        apply(entry_in(None), Move.ACCEPT)
    assert str(refused.value) == (
        "job k: accept from (none) is not allowed (only from submitting); "
        "the ledger entry is left as it was"
    )
    with pytest.raises(IllegalMove) as refused:
        apply(entry_in(LedgerStatus.EXPIRED), Move.SUBMIT)
    assert "job k: submit from expired is not allowed (only from (none), retrying)" in str(
        refused.value
    )
