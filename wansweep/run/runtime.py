"""Per-process shared state of a run: one store client, one fal connection pool, one budget.

A run's jobs may execute in several threads (and, sharded, several processes); each process
builds its :class:`~wansweep.run.execute.Runtime` once per run id from :class:`RunSettings`.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager

from pydantic import BaseModel

from wansweep.fal import FalConfig, FalQueue
from wansweep.fal.types import PollSpec
from wansweep.fal.webhooks import receiver_from_env
from wansweep.plan.pricing import Budget
from wansweep.plan.spec import LeaseSpec, ReconcileSpec
from wansweep.run.execute import Runtime
from wansweep.run.leases import Leases
from wansweep.store import open_store
from wansweep.store.layout import lease_probe_key, marker_key

_runtimes: dict[str, Runtime] = {}
_stops: dict[str, threading.Event] = {}
_lock = threading.Lock()


class RunSettings(BaseModel):
    """What a generation task needs to know about its run (serialisable: it crosses processes).
    Defaults live on the sweep spec; every field here is given by the flow."""

    run_id: str
    store: str
    budget_usd: float | None
    poll: PollSpec
    reconcile: ReconcileSpec
    leases: LeaseSpec
    max_attempts: int
    endpoint_concurrency: int
    connections: int
    resubmit_expired: bool
    resubmit_ambiguous: bool
    global_limits: bool  # hold a Prefect global concurrency slot per in-flight request


def stop_event(run_id: str) -> threading.Event:
    """Set on cancellation: every waiting job of the run cancels its fal request."""
    with _lock:
        return _stops.setdefault(run_id, threading.Event())


def stop_all() -> None:
    """Cancel every run of this process (Ctrl-C)."""
    with _lock:
        events = list(_stops.values())
    for event in events:
        event.set()


def active_jobs() -> int:
    """Jobs of this process that have not yet returned (their ledger may still change)."""
    with _lock:
        return sum(rt.active for rt in _runtimes.values())


def runtime_for(
    settings: RunSettings, guard: Callable[[str], AbstractContextManager] | None = None
) -> Runtime:
    """The process's runtime of this run, built on first use."""
    stop = stop_event(settings.run_id)
    with _lock:
        rt = _runtimes.get(settings.run_id)
        if rt is None:
            store = open_store(settings.store)
            store.check_conditional_writes(lease_probe_key(uuid.uuid4().hex))
            webhooks = receiver_from_env()
            if webhooks is not None:  # each webhook also names its job's request, for settling
                webhooks.on_marker = lambda job, attempt, rid: store.put_bytes(
                    marker_key(job, attempt, rid), b"{}"
                )
            rt = Runtime(
                store=store,
                fal=FalQueue(
                    FalConfig.from_env(),
                    max_connections=settings.connections,
                    stop=stop,
                    webhooks=webhooks,
                    stream_idle=settings.poll.stream_idle,
                ),
                budget=Budget(settings.budget_usd),
                poll=settings.poll,
                max_attempts=settings.max_attempts,
                endpoint_concurrency=settings.endpoint_concurrency,
                reconcile=settings.reconcile,
                leases=Leases(store, ttl=settings.leases.ttl),
                lease_poll=settings.leases.poll,
                resubmit_expired=settings.resubmit_expired,
                resubmit_ambiguous=settings.resubmit_ambiguous,
                guard=guard,
            )
            _runtimes[settings.run_id] = rt
        return rt


def close_runtime(run_id: str) -> None:
    with _lock:
        rt = _runtimes.pop(run_id, None)
        _stops.pop(run_id, None)
    if rt is not None:
        rt.fal.close()
        if rt.leases is not None:
            rt.leases.close()
