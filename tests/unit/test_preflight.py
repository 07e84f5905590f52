"""What must hold before a run starts, for `plan` and `run` alike: no invalid row (unless left
out), and the jobs left to run within the budget; what the archive holds is not run again."""

from __future__ import annotations

import pytest

from tests.helpers import write_case
from wansweep.errors import OverBudget, PlanInvalid
from wansweep.plan.preflight import preflight
from wansweep.plan.spec import load_spec
from wansweep.store import LocalStore
from wansweep.store.layout import job_file


def case(tmp_path, bad_row: bool = False, **spec):
    path = write_case(tmp_path, rows=2, endpoints=["flash"], grid={"resolution": ["720p"]}, **spec)
    if bad_row:
        manifest = tmp_path / "manifest.csv"
        manifest.write_text(manifest.read_text() + "r9,img0.png,,g1\n")  # no prompt
    return load_spec(path), LocalStore(tmp_path / "archive")


def test_a_valid_plan_within_budget_may_run_and_skips_what_is_archived(tmp_path):
    spec, store = case(tmp_path, seeds=[1, 2], budget_usd=1.0)  # 4 jobs at $0.25
    checked = preflight(spec, store)
    assert not checked.blocking and len(checked.todo) == 4 and checked.todo_usd == 1.0
    store.put_bytes(job_file(checked.todo[0].job_key, "video.mp4"), b"video")
    store.put_json(job_file(checked.todo[0].job_key, "meta.json"), {})
    again = preflight(spec, store)
    assert len(again.todo) == 3 and checked.todo[0].job_key in again.archived


def test_an_invalid_row_blocks_the_run_unless_left_out(tmp_path):
    spec, store = case(tmp_path, bad_row=True, seeds=[1])
    checked = preflight(spec, store)
    assert isinstance(checked.blocking[0], PlanInvalid)
    assert "row 3" in str(checked.blocking[0]) and "prompt" in str(checked.blocking[0])
    with pytest.raises(PlanInvalid):
        checked.raise_if_blocked()
    skipping = preflight(spec, store, skip_invalid=True)
    assert not skipping.blocking and len(skipping.todo) == 2
    assert {p.row for p in skipping.plan.skipped} == {3}


@pytest.mark.parametrize("budget, blocked", [(0.75, True), (0.999999, True), (1.0, False)])
def test_jobs_left_above_the_budget_block_the_run_at_its_edge(tmp_path, budget, blocked):
    spec, store = case(tmp_path, seeds=[1, 2], budget_usd=budget)  # $1.00 to run
    checked = preflight(spec, store)
    assert any(isinstance(b, OverBudget) for b in checked.blocking) is blocked


def test_no_manifest_is_refused_before_anything_is_read(tmp_path):
    spec, store = case(tmp_path)
    with pytest.raises(PlanInvalid, match="no manifest"):
        preflight(spec.model_copy(update={"manifest": None}), store)
