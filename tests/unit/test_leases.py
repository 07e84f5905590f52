"""Leases on a local folder: of many processes' threads taking one job's lease at once, one
wins; a lease is taken over only when its holder stopped renewing it; releasing is owner-only."""

from __future__ import annotations

import threading
import time

from wansweep.run.leases import Leases, Owner, lease_key
from wansweep.store import LocalStore


def test_exactly_one_of_many_takers_gets_a_lease(tmp_path):
    store = LocalStore(tmp_path)
    runs = [Leases(store, Owner.new(), ttl=60) for _ in range(16)]
    start = threading.Barrier(len(runs))
    won: list[int] = []

    def take(n: int) -> None:
        start.wait()
        if runs[n].acquire("job"):
            won.append(n)

    threads = [threading.Thread(target=take, args=(n,)) for n in range(len(runs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1
    assert all(not r.acquire("job") for n, r in enumerate(runs) if n != won[0])
    assert runs[won[0]].acquire("job")  # the holder may take it again (re-entrant)
    for r in runs:
        r.close()


def test_a_lease_is_taken_over_only_after_its_ttl(tmp_path):
    store = LocalStore(tmp_path)
    dead = Leases(store, Owner.new(), ttl=3600)
    assert dead.acquire("job")
    dead._stop.set()  # the holder dies: no more renewals
    other = Leases(store, Owner.new(), ttl=3600)
    assert not other.acquire("job")
    path = tmp_path / lease_key("job")
    old = time.time() - 7200  # as if the last renewal was two hours ago
    import os

    os.utime(path, (old, old))
    assert other.acquire("job")
    assert not dead.still_ours("job") or dead.held()  # the dead holder's view is its own
    third = Leases(store, Owner.new(), ttl=3600)
    assert not third.acquire("job")
    other.close()
    third.close()


def test_release_removes_only_ones_own_lease(tmp_path):
    store = LocalStore(tmp_path)
    a, b = Leases(store, Owner.new()), Leases(store, Owner.new())
    assert a.acquire("job")
    b.release("job")  # not b's: stays
    assert store.exists(lease_key("job"))
    a.release("job")
    assert not store.exists(lease_key("job"))
    assert b.acquire("job")
    b.close()
    assert not store.exists(lease_key("job"))
