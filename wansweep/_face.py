"""Lazy package faces: a package names its public parts without importing them all (a plan
needs neither pandas' report nor matplotlib), and each name still resolves on first use."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy(package: str, exports: dict[str, str]) -> tuple[Callable[[str], Any], Callable[[], list]]:
    """``__getattr__`` and ``__dir__`` for a package whose public name ``n`` lives in the
    module ``exports[n]`` (relative to ``package``)."""

    def getattr_(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{exports[name]}"), name)

    return getattr_, lambda: sorted(exports)
