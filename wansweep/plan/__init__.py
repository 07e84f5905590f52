"""Planning: what a sweep will do and what it will cost, decided before a cent is spent.

- :mod:`.spec`         sweep specs (YAML): arms, seeds, settings; :class:`Job` and its key
- :mod:`.endpoints`    fal's endpoints as data (configs/endpoints): schema, settings map, price
- :mod:`.settings`     wansweep's one vocabulary of settings, as specs and manifests give them
- :mod:`.schema`       the rules of the media a request points at (shared with the local server)
- :mod:`.manifest`     manifests (CSV, Parquet, JSONL) read, cell by cell
- :mod:`.planner`      the plan: every row checked as fal would, expanded into jobs, priced
- :mod:`.media_index`  what planning found in each input, remembered in the archive
- :mod:`.pricing`      the budget, and fal's unit prices as a run last read them
- :mod:`.preflight`    what must hold before a run starts (rows, budget), for ``plan`` and ``run``

May import :mod:`wansweep.media`, :mod:`wansweep.store`, :mod:`wansweep.fal` (its plain types),
:mod:`wansweep.errors` and :mod:`wansweep.scrub`; never ``run``, ``results`` or Prefect
(tests/unit/test_house.py).
"""

from wansweep._face import lazy

_EXPORTS = {
    "SweepSpec": "spec",
    "Job": "spec",
    "load_spec": "spec",
    "job_key": "spec",
    "Plan": "planner",
    "plan": "planner",
    "read_manifest": "manifest",
    "Profile": "endpoints",
    "profile": "endpoints",
    "Budget": "pricing",
    "check_budget": "pricing",
    "Preflight": "preflight",
    "preflight": "preflight",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy(__name__, _EXPORTS)
