"""Per-process shared state for tasks: one store client, one fal connection pool, one budget."""

from __future__ import annotations

import threading

from pydantic import BaseModel

from wansweep.archive import Budget
from wansweep.execute import Runtime
from wansweep.falqueue import FalConfig, FalQueue
from wansweep.store import open_store
from wansweep.sweep import PollSpec
from wansweep.webhooks import receiver_from_env

_runtimes: dict[str, Runtime] = {}
_stops: dict[str, threading.Event] = {}
_lock = threading.Lock()


class RunSettings(BaseModel):
    """What a generation task needs to know about its run (serialisable: it crosses processes)."""

    run_id: str
    store: str
    budget_usd: float | None = None
    poll: PollSpec = PollSpec()
    max_attempts: int = 2
    endpoint_concurrency: int = 8
    connections: int = 64
    resubmit_expired: bool = False
    global_limits: bool = False  # hold a Prefect global concurrency slot per in-flight request


def limit_name(endpoint: str) -> str:
    """The Prefect global concurrency limit of an endpoint: wansweep-standard, wansweep-flash."""
    from wansweep.sweep import endpoint_alias

    return f"wansweep-{endpoint_alias(endpoint)}"


def _prefect_slot(endpoint: str):
    from prefect.concurrency.sync import concurrency

    return concurrency(limit_name(endpoint), occupy=1, strict=True)


def stop_event(run_id: str) -> threading.Event:
    """Set on cancellation: every waiting job of the run cancels its fal request."""
    with _lock:
        return _stops.setdefault(run_id, threading.Event())


def stop_all() -> None:
    with _lock:
        events = list(_stops.values())
    for event in events:
        event.set()


def active_jobs() -> int:
    """Jobs of this process that have not yet returned (their ledger may still change)."""
    with _lock:
        return sum(rt.active for rt in _runtimes.values())


def runtime_for(settings: RunSettings) -> Runtime:
    stop = stop_event(settings.run_id)
    with _lock:
        rt = _runtimes.get(settings.run_id)
        if rt is None:
            rt = Runtime(
                store=open_store(settings.store),
                fal=FalQueue(
                    FalConfig.from_env(),
                    max_connections=settings.connections,
                    stop=stop,
                    webhooks=receiver_from_env(),
                ),
                budget=Budget(settings.budget_usd),
                poll=settings.poll,
                max_attempts=settings.max_attempts,
                endpoint_concurrency=settings.endpoint_concurrency,
                resubmit_expired=settings.resubmit_expired,
                guard=_prefect_slot if settings.global_limits else None,
            )
            _runtimes[settings.run_id] = rt
        return rt


def close_runtime(run_id: str) -> None:
    with _lock:
        rt = _runtimes.pop(run_id, None)
        _stops.pop(run_id, None)
    if rt is not None:
        rt.fal.close()
