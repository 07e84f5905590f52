"""Leases on a local folder: of many processes' threads taking one job's lease at once, one
wins; a lease is taken over only when its holder stopped renewing it; releasing is owner-only."""

from __future__ import annotations

import threading
import time

import pytest

from wansweep.errors import LeaseHeld
from wansweep.run.leases import TAKEOVER_MARGIN, Leases, Owner, lease_key
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


@pytest.mark.parametrize(
    "age, taken",
    [
        (3600 * (1 + TAKEOVER_MARGIN) - 5, False),  # past the ttl, within the margin: still live
        (3600 * (1 + TAKEOVER_MARGIN) + 5, True),
        (360, False),  # a tenth of the ttl
        (3600 + 5, False),  # just past the ttl itself
    ],
)
def test_a_lease_is_taken_over_only_past_its_ttl_and_margin(tmp_path, monkeypatch, age, taken):
    store = LocalStore(tmp_path)
    dead = Leases(store, Owner.new(), ttl=3600)
    assert dead.acquire("job")
    dead._stop.set()  # the holder stops renewing
    other = Leases(store, Owner.new(), ttl=3600)
    real_now = LocalStore._now  # the folder's clock, ``age`` seconds after the last renewal
    monkeypatch.setattr(LocalStore, "_now", staticmethod(lambda folder: real_now(folder) + age))
    assert other.acquire("job") is taken
    monkeypatch.undo()
    if taken:  # the old holder finds out on the store, before it could pay
        with pytest.raises(LeaseHeld, match="taken over"):
            dead.prove("job")
        assert not Leases(store, Owner.new(), ttl=3600).acquire("job")  # one taker only
    else:
        dead.prove("job")  # still its own: renewed, and younger than ever
        assert store.read_versioned(lease_key("job"))[2] < 60
    other.close()


def test_a_fast_clock_cannot_steal_a_live_lease_in_a_local_folder(tmp_path, monkeypatch):
    """Ages are read on the folder's clock: a process whose own clock runs ten minutes ahead
    sees a just-renewed lease as just renewed."""
    store = LocalStore(tmp_path)
    holder = Leases(store, Owner.new(), ttl=60)
    assert holder.acquire("job")
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 600)
    thief = Leases(store, Owner.new(), ttl=60)
    assert not thief.acquire("job")
    monkeypatch.setattr(time, "time", lambda: real() - 600)  # and a slow one
    assert not thief.acquire("job")
    monkeypatch.undo()
    holder.prove("job")
    holder.close()


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
