"""Poolings: a map → one embedding per image; each states ``out_channels``."""

from __future__ import annotations

from okc.models.poolings.global_pool import SPOC, GeM, Pooling
from okc.models.poolings.linear import PoolingLinear
from okc.registry import POOLINGS

__all__ = ["SPOC", "GeM", "Pooling", "PoolingLinear"]

for _pooling in (Pooling, GeM, SPOC, PoolingLinear):
    POOLINGS.register(_pooling)
