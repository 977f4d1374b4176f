"""Poolings: a map → one embedding per image; each states ``out_channels``."""

from __future__ import annotations

from okc.models.poolings.global_pool import SPOC, GeM, Pooling
from okc.registry import POOLINGS

__all__ = ["SPOC", "GeM", "Pooling"]

for _pooling in (Pooling, GeM, SPOC):
    POOLINGS.register(_pooling)
