"""Prices as data: configs/pricing.yaml, per endpoint and resolution, USD per second of video."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

DEFAULT_PATH = Path(__file__).resolve().parents[1] / "configs" / "pricing.yaml"


@dataclass(frozen=True)
class PriceTable:
    prices: dict[str, dict[str, Any]]
    path: str

    @classmethod
    def load(cls, path: str | Path | None = None) -> PriceTable:
        path = Path(path or os.environ.get("WANSWEEP_PRICING") or DEFAULT_PATH)
        try:
            data = yaml.safe_load(path.read_text())
        except FileNotFoundError:
            raise FileNotFoundError(
                f"price table {path} not found; set WANSWEEP_PRICING to a pricing.yaml"
            ) from None
        return cls(prices=data["prices"], path=str(path))

    def unit_price(self, endpoint: str, resolution: str) -> float:
        try:
            return float(self.prices[endpoint][resolution])
        except KeyError:
            raise KeyError(
                f"{self.path} has no price for {endpoint} at {resolution}; add it before running"
            ) from None

    def estimate(self, endpoint: str, resolution: str, duration: str | int) -> float:
        """Estimated USD for one job (billed per second of output video)."""
        return round(self.unit_price(endpoint, resolution) * int(duration), 6)
