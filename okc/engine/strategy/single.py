"""One process on one device: the base Strategy's answers, unchanged."""

from __future__ import annotations

from okc.engine.strategy.base import Strategy


class SingleDeviceStrategy(Strategy):
    """Nothing to wrap, synchronise or gather (``trainer.strategy: single_device``, and ``auto``
    or any strategy in a single process)."""

    name = "single_device"
