"""Shared by every test: quiet Prefect logs. Servers live in tests/integration/conftest.py, so
unit tests start none; helpers every test may use are in tests/helpers.py."""

from __future__ import annotations

import os

os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
