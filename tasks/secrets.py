"""Credentials from Prefect Secret blocks, for workers that keep no keys in their environment.

A credential already in the environment wins. Otherwise, when a Prefect server is configured,
the Secret block of the variable's name in lower case with dashes (``fal-key``,
``aws-access-key-id``, ``aws-secret-access-key``, ``aws-session-token``) fills it for this
process. Values never appear in parameters, logs or artifacts; only block names are logged.
"""

from __future__ import annotations

import os

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

CREDENTIALS = ("FAL_KEY", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")


def block_name(variable: str) -> str:
    return variable.lower().replace("_", "-")


@task(name="load-secrets", cache_policy=NO_CACHE, persist_result=False)
def load_secrets() -> list[str]:
    """Fill unset credentials from Secret blocks; returns the names of the blocks used."""
    missing = [v for v in CREDENTIALS if not os.environ.get(v)]
    if not missing:
        return []
    from prefect.blocks.system import Secret
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():  # ephemeral mode: no blocks to read
        return []
    used = []
    for variable in missing:
        try:
            value = Secret.load(block_name(variable), _sync=True).get()
        except ValueError:  # no such block
            continue
        os.environ[variable] = str(value)
        used.append(block_name(variable))
    if used:
        get_run_logger().info("credentials from Prefect Secret blocks: %s", ", ".join(used))
    return used
