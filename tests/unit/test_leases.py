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


class Scripted:
    """A store whose lease answers are scripted (pure logic: the edges a folder cannot hit
    exactly, such as an age of exactly the takeover limit or a lease that vanishes)."""

    uri = "scripted://"

    def __init__(self, creates=(), reads=(), replaces=()):
        self.creates, self.reads, self.replaces = list(creates), list(reads), list(replaces)
        self.calls: list[str] = []

    def create_exclusive(self, key, data):
        self.calls.append("create")
        return self.creates.pop(0)

    def read_versioned(self, key):
        self.calls.append("read")
        return self.reads.pop(0)

    def replace_if(self, key, data, version):
        self.calls.append(f"replace {version}")
        answer = self.replaces.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    def delete(self, key):
        self.calls.append("delete")


OTHER = b'{"owner": "someone else"}'
LIMIT = 100 * (1 + TAKEOVER_MARGIN)


@pytest.mark.parametrize(
    "age, taken", [(LIMIT, True), (LIMIT - 1e-9, False), (None, False)], ids=["at", "below", "?"]
)
def test_the_takeover_limit_is_exact_and_an_unknown_age_is_never_old(age, taken):
    store = Scripted(creates=[False], reads=[(OTHER, "v1", age)], replaces=["v2"])
    leases = Leases(store, Owner.new(), ttl=100)
    assert leases.acquire("job") is taken
    assert leases.held() == (["job"] if taken else [])
    assert store.calls[-1] == ("replace v1" if taken else "read")
    leases._stop.set()


def test_a_takeover_lost_to_a_faster_taker_is_not_a_lease():
    store = Scripted(creates=[False], reads=[(OTHER, "v1", LIMIT + 5)], replaces=[False])
    leases = Leases(store, Owner.new(), ttl=100)
    assert leases.acquire("job") is False and leases.held() == []


def test_a_lease_that_vanishes_between_create_and_read_is_created_again():
    store = Scripted(creates=[False, "v9"], reads=[None])
    leases = Leases(store, Owner.new(), ttl=100)
    assert leases.acquire("job") is True and leases.held() == ["job"]
    assert store.calls == ["create", "read", "create"]
    leases._stop.set()


def test_a_lease_that_keeps_vanishing_is_given_up_after_three_tries():
    store = Scripted(creates=[False] * 3, reads=[None] * 3)
    assert Leases(store, Owner.new(), ttl=100).acquire("job") is False
    assert store.calls == ["create", "read"] * 3


def test_ones_own_lease_found_on_the_store_is_held_again_under_its_version():
    owner = Owner.new()
    mine = owner.payload()
    store = Scripted(creates=[False], reads=[(mine, "v3", 0.0)], replaces=["v4"])
    leases = Leases(store, owner, ttl=100)
    assert leases.acquire("job") and leases.held() == ["job"]
    leases.prove("job")  # renewed conditionally on the version found
    assert store.calls[-1] == "replace v3"
    leases._stop.set()


def test_a_lease_taken_over_is_renewed_under_the_version_the_takeover_wrote():
    store = Scripted(creates=[False], reads=[(OTHER, "v1", LIMIT + 5)], replaces=["v2", "v3"])
    leases = Leases(store, Owner.new(), ttl=100)
    assert leases.acquire("job")
    leases.prove("job")  # the taker may pay: the lease is its own
    assert store.calls[-1] == "replace v2"
    leases._stop.set()


def test_each_proof_renews_under_the_version_the_last_one_wrote():
    owner = Owner.new()
    store = Scripted(creates=["v1"], replaces=["v2", "v3"])
    leases = Leases(store, owner, ttl=100)
    assert leases.acquire("job")
    leases.prove("job")
    leases.prove("job")  # submits of later attempts prove it again
    assert store.calls == ["create", "replace v1", "replace v2"]
    leases._stop.set()


def test_a_lost_lease_stays_lost_and_is_never_written_again():
    # taken over while this process stalled: no later proof may pass, nor overwrite the taker's
    store = Scripted(creates=["v1"], replaces=[False])
    leases = Leases(store, Owner.new(), ttl=100)
    assert leases.acquire("job")
    with pytest.raises(LeaseHeld, match="taken over"):
        leases.prove("job")
    with pytest.raises(LeaseHeld) as err:
        leases.prove("job")
    assert str(err.value) == (  # what the user reads of the job this process gave up
        "job job: its lease was taken over (this process stalled past its ttl); "
        "the run holding it runs it"
    )
    assert store.calls == ["create", "replace v1"]
    leases._stop.set()


def test_a_job_whose_lease_was_released_or_never_taken_cannot_be_proven():
    store = Scripted(creates=["v1"], reads=[None], replaces=[])
    leases = Leases(store, Owner.new(), ttl=100)
    with pytest.raises(LeaseHeld):
        leases.prove("never-taken")
    assert leases.acquire("job")
    leases.release("job")
    assert leases.held() == []
    with pytest.raises(LeaseHeld):
        leases.prove("job")
    assert "replace v1" not in store.calls
    leases._stop.set()


class Ticks:
    """The renewal thread's clock, moved by the test: each period ends when the test ticks
    (no sleeping), and the test learns when the round it started is done."""

    def __init__(self):
        self.periods: list[float] = []
        self._tick = threading.Semaphore(0)
        self._idle = threading.Semaphore(0)
        self._stopped = False

    def wait(self, timeout):  # as threading.Event.wait: True once stopped
        self.periods.append(timeout)
        self._idle.release()
        self._tick.acquire()
        return self._stopped

    def started(self) -> bool:
        """The thread started and waits out its first period."""
        return self._idle.acquire(timeout=10)

    def tick(self) -> None:
        """One period passes; returns when the thread has done its round and waits again."""
        self._tick.release()
        assert self._idle.acquire(timeout=10), "the renewal thread did not come back"

    def set(self) -> None:
        self._stopped = True
        self._tick.release()


def renewing(store, ttl=90.0) -> tuple[Leases, Ticks]:
    leases = Leases(store, Owner.new(), ttl=ttl)
    leases._stop = ticks = Ticks()
    return leases, ticks


def test_held_leases_are_renewed_every_third_of_the_ttl_by_one_thread():
    store = Scripted(creates=["a1", "b1"], replaces=["a2", "b2", "a3", "b3"])
    leases, ticks = renewing(store, ttl=90.0)
    assert leases.acquire("a") and leases.acquire("b")
    assert ticks.started()
    ticks.tick()
    ticks.tick()
    assert store.calls[2:] == ["replace a1", "replace b1", "replace a2", "replace b2"]
    assert ticks.periods == [30.0] * 3  # as documented: ttl / 3, three chances before the ttl
    leases.close()


def test_a_store_hiccup_renewing_one_lease_does_not_skip_the_others():
    store = Scripted(creates=["a1", "b1"], replaces=[OSError("s3 hiccup"), "b2", "a2", "b3"])
    leases, ticks = renewing(store)
    assert leases.acquire("a") and leases.acquire("b")
    assert ticks.started()
    ticks.tick()
    ticks.tick()  # and the next round tries the first again
    assert store.calls[2:] == ["replace a1", "replace b1", "replace a1", "replace b2"]
    leases._stop.set()


def test_a_released_lease_is_no_longer_renewed():
    store = Scripted(creates=["a1", "b1"], reads=[None], replaces=["b2"])
    leases, ticks = renewing(store)
    assert leases.acquire("a") and leases.acquire("b")
    assert ticks.started()
    leases.release("a")
    ticks.tick()
    assert store.calls[2:] == ["read", "replace b1"]
    leases._stop.set()


def test_the_renewal_thread_never_keeps_a_dead_run_alive():
    # a run that dies without close() must exit: its leases then lapse and are taken over
    store = Scripted(creates=["a1"])
    leases, ticks = renewing(store)
    assert leases.acquire("a")
    try:
        assert ticks.started()
        assert leases._thread.daemon
    finally:
        leases._stop.set()
