"""``EarlyStopping``: stop fit when a monitored value stops improving (Lightning's parameters)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal

from okc.engine.hooks import Callback, RunView
from okc.errors import ConfigError
from okc.registry import CALLBACKS


@CALLBACKS.register
class EarlyStopping(Callback):
    def __init__(
        self,
        *,
        monitor: str,
        min_delta: float = 0.0,
        patience: int = 3,
        mode: Literal["min", "max"] = "min",
        strict: bool = True,
        check_finite: bool = True,
        stopping_threshold: float | None = None,
        divergence_threshold: float | None = None,
        verbose: bool = False,
    ) -> None:
        self.monitor, self.mode = monitor, mode
        self.min_delta = abs(min_delta)
        self.patience, self.strict, self.check_finite = patience, strict, check_finite
        self.stopping_threshold = stopping_threshold
        self.divergence_threshold = divergence_threshold
        self.verbose = verbose
        self.best: float | None = None
        self.wait = 0
        self.stopped_epoch: int | None = None
        self.reason = ""

    def _improved(self, value: float) -> bool:
        if self.best is None:
            return True
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def _beyond(self, value: float, threshold: float | None, *, good: bool) -> bool:
        if threshold is None:
            return False
        lower_is_better = self.mode == "min"
        return (value <= threshold) if lower_is_better == good else (value >= threshold)

    def on_epoch_end(self, run: RunView, metrics: Mapping[str, float]) -> None:
        if self.monitor not in metrics:
            phase = self.monitor.split("/", 1)[0]
            ran = phase == "train" or any(k.startswith(f"{phase}/") for k in metrics)
            if self.strict and ran:
                known = ", ".join(sorted(metrics)) or "nothing"
                raise ConfigError(
                    f"{self.config_path}.monitor",
                    f"'{self.monitor}' was not logged; logged this epoch: {known}",
                )
            return
        value = float(metrics[self.monitor])
        if self.check_finite and not math.isfinite(value):
            self._stop(run, f"{self.monitor} is {value}")
        elif self._beyond(value, self.stopping_threshold, good=True):
            self._stop(run, f"{self.monitor}={value:.6g} reached {self.stopping_threshold}")
        elif self._beyond(value, self.divergence_threshold, good=False):
            self._stop(run, f"{self.monitor}={value:.6g} diverged past {self.divergence_threshold}")
        elif self._improved(value):
            self.best, self.wait = value, 0
            if self.verbose and run.is_main:
                print(f"EarlyStopping: {self.monitor} improved to {value:.6g}")
        else:
            self.wait += 1
            if self.wait >= self.patience:
                self._stop(run, f"{self.monitor} did not improve for {self.wait} checks "
                                 f"(best {self.best:.6g})")  # fmt: skip

    def _stop(self, run: RunView, reason: str) -> None:
        message = f"early stopping at epoch {run.epoch}: {reason}"
        if run.request_stop(message):  # not before trainer.min_epochs
            self.stopped_epoch, self.reason = run.epoch, message

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "wait": self.wait}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.best, self.wait = state.get("best"), state.get("wait", 0)
