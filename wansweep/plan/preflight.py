"""Before a cent is spent: validate the plan, skip what the archive holds, check the budget.

``wansweep plan`` and the sweep flow both call :func:`preflight`, so what the one refuses the
other refuses too.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from wansweep.errors import InputError, OverBudget, PlanInvalid
from wansweep.plan.planner import Plan, plan
from wansweep.plan.pricing import check_budget
from wansweep.plan.spec import Job, SweepSpec
from wansweep.store import Store
from wansweep.store.layout import archived_keys

SHOWN_PROBLEMS = 50


@dataclass
class Preflight:
    plan: Plan
    archived: set[str]
    todo: list[Job]
    blocking: list[InputError] = field(default_factory=list)  # why the run must not start

    @property
    def todo_usd(self) -> float:
        return round(sum(j.estimated_usd for j in self.todo), 6)

    def raise_if_blocked(self) -> None:
        if self.blocking:
            raise self.blocking[0]


def plan_invalid(planned: Plan, manifest: str) -> PlanInvalid | None:
    """The plan's errors as one error (the first 50 listed), or None."""
    if not planned.errors:
        return None
    shown = "\n".join(f"  {p}" for p in planned.errors[:SHOWN_PROBLEMS])
    more = len(planned.errors) - SHOWN_PROBLEMS
    return PlanInvalid(
        f"{len(planned.errors)} problem(s) in {manifest}; nothing was submitted:\n{shown}"
        + (f"\n  ... and {more} more (wansweep plan lists them all)" if more > 0 else "")
    )


def preflight(spec: SweepSpec, store: Store, skip_invalid: bool = False) -> Preflight:
    """Plan ``spec`` and decide whether it may run: invalid rows (unless skipped) or jobs left
    to run estimated above the budget block it. Reads the manifest, the media the store's media
    index does not vouch for, and one listing."""
    if not spec.manifest:
        raise PlanInvalid("no manifest: give one in the spec or with --manifest")
    planned = plan(spec, spec.manifest, skip_invalid=skip_invalid, index_store=store)
    done = archived_keys(store)
    todo = [j for j in planned.jobs if j.job_key not in done]
    result = Preflight(planned, done, todo)
    if not skip_invalid and (invalid := plan_invalid(planned, spec.manifest)):
        result.blocking.append(invalid)
    try:
        check_budget(len(todo), result.todo_usd, spec.budget_usd)
    except OverBudget as exc:
        result.blocking.append(exc)
    return result
