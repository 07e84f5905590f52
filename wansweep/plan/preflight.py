"""Before a cent is spent: validate the plan, skip what the archive holds, check the budget.

``wansweep plan`` and the sweep flow both call :func:`preflight`, so what the one refuses the
other refuses too.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from wansweep.errors import InputError, OverBudget, PlanInvalid
from wansweep.plan.manifest import Plan, plan
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


def plan_invalid(the_plan: Plan, manifest: str) -> PlanInvalid | None:
    """The plan's errors as one error (the first 50 listed), or None."""
    if not the_plan.errors:
        return None
    shown = "\n".join(f"  {p}" for p in the_plan.errors[:SHOWN_PROBLEMS])
    more = len(the_plan.errors) - SHOWN_PROBLEMS
    return PlanInvalid(
        f"{len(the_plan.errors)} problem(s) in {manifest}; nothing was submitted:\n{shown}"
        + (f"\n  ... and {more} more (wansweep plan lists them all)" if more > 0 else "")
    )


def preflight(cfg: SweepSpec, store: Store, skip_invalid: bool = False) -> Preflight:
    """Plan ``cfg`` and decide whether it may run: invalid rows (unless skipped) or jobs left
    to run estimated above the budget block it. Reads the manifest, the media the store's media
    index does not vouch for, and one listing."""
    if not cfg.manifest:
        raise PlanInvalid("no manifest: give one in the spec or with --manifest")
    the_plan = plan(cfg, cfg.manifest, skip_invalid=skip_invalid, index_store=store)
    done = archived_keys(store)
    todo = [j for j in the_plan.jobs if j.job_key not in done]
    result = Preflight(the_plan, done, todo)
    if not skip_invalid and (invalid := plan_invalid(the_plan, cfg.manifest)):
        result.blocking.append(invalid)
    try:
        check_budget(len(todo), result.todo_usd, cfg.budget_usd)
    except OverBudget as exc:
        result.blocking.append(exc)
    return result
