"""What must work before a run's first submit, checked once rather than met once per job.

- the archive takes a write and gives it back (:func:`check_store`): a wrong bucket, a missing
  permission or expired credentials stop the run before anything is paid;
- fal answers our key on a request that costs nothing, its pricing API (:func:`check_fal`):
  a key fal refuses (401) or no route to fal stops the run before any submit. Its answer, one
  unit price per endpoint, is kept in the archive with its date (:class:`FalPrices`), so the
  report turns each job's billing units (``X-Fal-Billable-Units``) into dollars from the
  archive alone.

fal's queue host is reached first (the status of a request nobody made: any answer proves a
route; what it says of the key is not documented, so it is not read). fal documents the
pricing API for API-scope keys; its answer does not prove the account unlocked (a locked account is refused at submit: the run-wide
breaker in :mod:`.execute` stops there, at the first). A 403 may be a proxy's challenge
rather than fal's word on the key, so it warns instead of stopping.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import asdict

from wansweep.errors import CannotRun, FalError
from wansweep.fal import FalConfig, FalQueue
from wansweep.fal.policy import RETRIES
from wansweep.plan.pricing import FalPrices
from wansweep.store import Store
from wansweep.store.layout import FAL_PRICES_KEY, STORE_PROBE


def check_store(store: Store) -> None:
    """Write a small object, read it back, remove it: :class:`CannotRun` naming the archive
    and what to check when any step fails."""
    probe = STORE_PROBE + uuid.uuid4().hex
    body = b"wansweep store check"
    try:
        store.put_bytes(probe, body)
        back = store.get_bytes(probe)
        store.delete(probe)
    except Exception as exc:  # StoreError, OSError, botocore's own: whatever refused it
        raise CannotRun(
            f"the archive {store.uri} refused a test write ({type(exc).__name__}: {exc}); "
            "check the bucket or folder name, its permissions and your credentials "
            "(AWS_PROFILE / AWS_ACCESS_KEY_ID, AWS_ENDPOINT_URL); nothing was submitted"
        ) from exc
    if back != body:
        raise CannotRun(
            f"the archive {store.uri} gave back other bytes than were written to it; "
            "nothing was submitted"
        )


def _reach_queue(fal: FalQueue, config: FalConfig, endpoint: str) -> None:
    """fal's queue host answers at all: the status of a request nobody made (any HTTP answer
    will do; what it says of our key is not documented, so it is not read as a verdict)."""
    handle = fal.handle_for(endpoint, str(uuid.uuid4()))
    try:
        fal.send("queue check", lambda: fal.http.get(handle.status_url), lambda r: False)
    except FalError as exc:
        raise CannotRun(
            f"cannot reach fal's queue at {config.queue_base} ({exc}); check the network, a "
            "proxy, or FAL_RUN_HOST / FAL_QUEUE_RUN_HOST; nothing was submitted"
        ) from None


def check_fal(
    store: Store, endpoints: set[str], config: FalConfig | None = None, warn=print
) -> FalPrices | None:
    """One free request to fal with our key (its pricing API for these endpoints): stop the
    run (:class:`CannotRun`) if fal refuses the key or cannot be reached; keep the prices it
    answers in the archive. Returns them (None when fal would not say; the cached ones stay)."""
    try:
        config = config or FalConfig.from_env()
    except RuntimeError as exc:
        raise CannotRun(str(exc)) from None
    fal = FalQueue(config, attempts=RETRIES.command_tries)
    try:
        _reach_queue(fal, config, sorted(endpoints)[0])
        prices = fal.prices(sorted(endpoints))
    except FalError as exc:
        code = exc.status_code
        if code == 401:
            raise CannotRun(
                f"fal refused the key (401 from its pricing API, {config.api_base}): check "
                "FAL_KEY (or the fal-key Secret block); nothing was submitted"
            ) from None
        if code is None:  # every try failed without an answer: no route to fal
            raise CannotRun(
                f"cannot reach fal at {config.api_base} ({exc}); check the network, a proxy, "
                "or FAL_RUN_HOST / FAL_QUEUE_RUN_HOST; nothing was submitted"
            ) from None
        warn(f"fal's pricing API answered {code} ({exc}); going on without fresh prices")
        return None
    finally:
        fal.close()
    found = FalPrices(time.time(), config.api_base, prices)
    store.put_json(FAL_PRICES_KEY, asdict(found))
    return found
