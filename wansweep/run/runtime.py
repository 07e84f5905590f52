"""A run as every process that runs its jobs sees it (:class:`Run`), and the services one
process builds for it once (:class:`Services`): one store client, one fal connection pool, one
budget, one set of leases.

A run's jobs may execute in several threads and, sharded, several processes; each process
builds its :class:`Services` on first use, keyed by the run's id.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field

from pydantic import BaseModel

from wansweep.errors import NotSent
from wansweep.fal import FalConfig, FalQueue
from wansweep.fal.webhooks import receiver_from_env
from wansweep.plan.pricing import Budget
from wansweep.plan.spec import RunSettings
from wansweep.run.leases import Leases
from wansweep.run.ledger import Ledger
from wansweep.store import Store, open_store
from wansweep.store.layout import lease_probe_key, marker_key

Guard = Callable[[str], AbstractContextManager]


class Run(BaseModel):
    """One run: its id, its archive and its settings (serialisable: it crosses processes)."""

    run_id: str
    store: str
    settings: RunSettings

    @classmethod
    def new(cls, store: str, settings: RunSettings) -> Run:
        return cls(run_id=uuid.uuid4().hex, store=store, settings=settings)

    @property
    def connections(self) -> int:
        """HTTP connections to fal: enough for every job in flight to stream and fetch."""
        return min(256, 2 * self.settings.concurrency + 8)


@dataclass
class Services:
    """What every job of a run shares in one process."""

    store: Store
    fal: FalQueue
    budget: Budget
    settings: RunSettings
    leases: Leases | None = None  # one worker per job across processes (None: this one only)
    guard: Guard | None = None  # e.g. a fleet-wide limit per endpoint
    endpoint_slots: dict[str, threading.BoundedSemaphore] = field(default_factory=dict)
    active: int = 0  # jobs in run_job right now
    halted: str | None = None  # why this run sends nothing more (every job would meet it)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _proven: set[str] = field(default_factory=set)  # endpoints fal took a submit of, this run
    _gates: dict[str, threading.Lock] = field(default_factory=dict)

    def halt(self, why: str) -> None:
        """Send no more submits in this run (requests already at fal are still collected):
        the first cause that is every job's, not one job's, stops the rest from meeting it."""
        with self._lock:
            if self.halted is None:
                self.halted = why
        self.fal.halted.set()

    @property
    def ledger(self) -> Ledger:
        return Ledger(self.store)

    @contextmanager
    def first_submit(self, endpoint: str) -> Iterator[None]:
        """Until fal has taken one submit of an endpoint in this run, that endpoint's submits go
        one at a time: a key fal refuses, or no route to it, is met by one submit, not by every
        job in flight at once (the others find the run halted). Then they go freely."""
        gate = None
        if endpoint not in self._proven:
            with self._lock:
                gate = self._gates.setdefault(endpoint, threading.Lock())
            gate.acquire()
            if endpoint in self._proven:
                gate.release()
                gate = None
        try:
            if gate is not None and self.halted:
                raise NotSent(
                    f"not sent: the run stopped submitting ({self.halted})", run_wide=True
                )
            yield
            if gate is not None:
                self._proven.add(endpoint)
        except NotSent as exc:
            if exc.run_wide:  # halted before the next one at the gate goes through it
                self.halt(str(exc))
            raise
        finally:
            if gate is not None:
                gate.release()

    @contextmanager
    def slot(self, endpoint: str) -> Iterator[None]:
        """Held from submit to result: this process's per-endpoint limit, then the guard's."""
        with self._lock:
            if endpoint not in self.endpoint_slots:
                self.endpoint_slots[endpoint] = threading.BoundedSemaphore(
                    self.settings.endpoint_concurrency
                )
            local = self.endpoint_slots[endpoint]
        with local, self.guard(endpoint) if self.guard else nullcontext():
            yield


_services: dict[str, Services] = {}
_stops: dict[str, threading.Event] = {}
_lock = threading.Lock()


def stop_event(run_id: str) -> threading.Event:
    """Set on cancellation: every waiting job of the run cancels its fal request."""
    with _lock:
        return _stops.setdefault(run_id, threading.Event())


def stop_all() -> None:
    """Cancel every run of this process (Ctrl-C, SIGTERM)."""
    with _lock:
        events = list(_stops.values())
    for event in events:
        event.set()


def active_jobs() -> int:
    """Jobs of this process that have not yet returned (their ledger may still change)."""
    with _lock:
        return sum(s.active for s in _services.values())


def services_for(run: Run, guard: Guard | None = None) -> Services:
    """The process's services of this run, built on first use."""
    stop = stop_event(run.run_id)
    with _lock:
        services = _services.get(run.run_id)
        if services is None:
            store = open_store(run.store)
            store.check_conditional_writes(lease_probe_key(uuid.uuid4().hex))
            webhooks = receiver_from_env()
            settings = run.settings
            fal = FalQueue(
                FalConfig.from_env(),
                max_connections=run.connections,
                stop=stop,
                webhooks=webhooks,
                stream_idle=settings.poll.stream_idle,
            )
            if webhooks is not None:
                # a verified webhook names its job's request (once per attempt), for settling
                webhooks.on_marker = lambda job, attempt, rid: store.create_exclusive(
                    marker_key(job, attempt), json.dumps({"request_id": rid}).encode()
                )
                webhooks.fal_now = lambda: fal.fal_time(time.time())
            services = Services(
                store=store,
                fal=fal,
                budget=Budget(settings.budget_usd),
                settings=settings,
                leases=Leases(store, ttl=settings.leases.ttl),
                guard=guard,
            )
            _services[run.run_id] = services
        return services


def close_services(run_id: str) -> str | None:
    """Close this process's services of a run; returns why it stopped submitting, if it did."""
    with _lock:
        services = _services.pop(run_id, None)
        _stops.pop(run_id, None)
    if services is None:
        return None
    services.fal.close()
    if services.leases is not None:
        services.leases.close()
    return services.halted
