"""Leases: one worker per job across processes, hosts and runs that share an archive.

A lease is a small object ``leases/<job_key>.json`` created with a conditional create (S3
``If-None-Match: *``; ``O_EXCL`` in a local folder), so of two processes that try at once
exactly one gets it. The holder renews it every ``ttl / 3`` seconds while the job runs; a
lease not renewed for ``ttl`` seconds (its holder was killed) is taken over with a
conditional replace (S3 ``If-Match``; a lock in a local folder), again by exactly one taker,
and only once it is older than ``ttl`` plus a margin (:data:`TAKEOVER_MARGIN` of the ttl), so
a holder renewing late is not robbed. Ages are measured on the store's own clock (S3
``Last-Modified`` against the answer's ``Date``; in a local folder, a lease's mtime against
the mtime of a file just written there), never on a client's, so a skewed client clock cannot
steal a live lease.

Right before each submit the holder proves the lease is still its own (:meth:`Leases.prove`):
a conditional renewal on the store, not a flag the renewal thread sets now and then, so a
process that stalled past the ttl and lost its lease learns it before it pays.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass

from wansweep.errors import LeaseHeld
from wansweep.store import Store
from wansweep.store.layout import lease_key

LEASE_TTL = 120.0
TAKEOVER_MARGIN = 0.25  # of the ttl: a lease is taken over at ttl * 1.25 without a renewal


@dataclass(frozen=True)
class Owner:
    """Who holds a lease: one per run and process."""

    token: str
    host: str
    pid: int

    @classmethod
    def new(cls) -> Owner:
        return cls(uuid.uuid4().hex, socket.gethostname(), os.getpid())

    def payload(self) -> bytes:
        return json.dumps(
            {"owner": self.token, "host": self.host, "pid": self.pid, "at": time.time()}
        ).encode()


class Leases:
    """Thread-safe: the leases one run holds in one process, renewed by one thread."""

    def __init__(self, store: Store, owner: Owner | None = None, ttl: float = LEASE_TTL):
        self.store, self.owner, self.ttl = store, owner or Owner.new(), ttl
        self._held: dict[str, str | None] = {}  # job key -> version (etag) of our lease
        self._renewing: dict[str, threading.Lock] = {}  # one renewal of a lease at a time
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self, job_key: str) -> bool:
        """Take the job's lease: True when this run now holds it, False when another live
        holder does."""
        key = lease_key(job_key)
        for _ in range(3):  # a lease can vanish between our create and our read
            version = self.store.create_exclusive(key, self.owner.payload())
            if version is not False:
                return self._hold(job_key, version)
            current = self.store.read_versioned(key)
            if current is None:
                continue
            data, version, age = current
            if _owner_of(data) == self.owner.token:
                return self._hold(job_key, version)
            if age is None or age < self.ttl * (1 + TAKEOVER_MARGIN):
                return False
            replaced = self.store.replace_if(key, self.owner.payload(), version)
            if replaced is not False:
                return self._hold(job_key, replaced)
            return False  # another taker was faster
        return False

    def release(self, job_key: str) -> None:
        with self._lock:
            self._held.pop(job_key, None)
            self._renewing.pop(job_key, None)
        current = self.store.read_versioned(lease_key(job_key))
        if current is not None and _owner_of(current[0]) == self.owner.token:
            self.store.delete(lease_key(job_key))

    def held(self) -> list[str]:
        with self._lock:
            return list(self._held)

    def _hold(self, job_key: str, version: str | None) -> bool:
        with self._lock:
            self._held[job_key] = version
            self._renewing.setdefault(job_key, threading.Lock())
            if self._thread is None:
                self._thread = threading.Thread(target=self._renew_forever, daemon=True)
                self._thread.start()
        return True

    def _renew_forever(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            for job_key in self.held():
                try:
                    self._renew(job_key)
                except Exception:  # the store hiccuped: the next round tries again
                    continue

    def _renew(self, job_key: str) -> bool:
        """Replace our lease with a fresh one if it is still the version we hold; False (and
        the lease forgotten as ours) if another process took it over. One at a time per job,
        so the renewal thread and :meth:`prove` never race each other's versions."""
        with self._lock:
            lock = self._renewing.get(job_key)
        if lock is None:
            return False
        with lock:
            with self._lock:
                version = self._held.get(job_key)
            new = (
                self.store.replace_if(lease_key(job_key), self.owner.payload(), version)
                if version is not None
                else False
            )
            with self._lock:
                if job_key in self._held:
                    self._held[job_key] = new if new is not False else None
        return new is not False

    def prove(self, job_key: str) -> None:
        """Renew the job's lease on the store now, conditionally on it being the version we
        hold: proof it is still ours, with a full ttl ahead of the submit that follows.
        :class:`LeaseHeld` if another process took it over (this one stalled past the ttl)."""
        if not self._renew(job_key):
            raise LeaseHeld(
                f"job {job_key}: its lease was taken over (this process stalled past its ttl); "
                "the run holding it runs it"
            )

    def close(self) -> None:
        self._stop.set()
        for job_key in self.held():
            try:
                self.release(job_key)
            except Exception:
                pass


def _owner_of(data: bytes) -> str | None:
    try:
        return json.loads(data).get("owner")
    except (ValueError, AttributeError):
        return None
