"""``LearningRateMonitor``: log each optimizer's learning rate (Lightning's key names)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Literal

from okc.engine.hooks import Callback, RunView
from okc.registry import CALLBACKS


@CALLBACKS.register
class LearningRateMonitor(Callback):
    """Logs ``lr-<Optimizer>`` (``lr-<Optimizer>/pg<i>`` per extra param group)."""

    def __init__(
        self,
        *,
        logging_interval: Literal["step", "epoch"] | None = None,
        log_momentum: bool = False,
        log_weight_decay: bool = False,
    ) -> None:
        self.logging_interval = logging_interval
        self.log_momentum = log_momentum
        self.log_weight_decay = log_weight_decay

    def values(self, run: RunView) -> dict[str, float]:
        counts = Counter(type(opt).__name__ for opt in run.optimizers)
        seen: Counter[str] = Counter()
        out: dict[str, float] = {}
        for opt in run.optimizers:
            name = type(opt).__name__
            if counts[name] > 1:
                name = f"{name}-{seen[name]}"
                seen[type(opt).__name__] += 1
            groups = opt.param_groups
            for i, group in enumerate(groups):
                suffix = f"/pg{i + 1}" if len(groups) > 1 else ""
                out[f"lr-{name}{suffix}"] = float(group["lr"])
                if self.log_momentum:
                    momentum = group.get("momentum", group.get("betas", (None,))[0])
                    if momentum is not None:
                        out[f"lr-{name}-momentum{suffix}"] = float(momentum)
                if self.log_weight_decay and "weight_decay" in group:
                    out[f"lr-{name}-weight_decay{suffix}"] = float(group["weight_decay"])
        return out

    def on_train_batch_end(self, run: RunView, logs: Mapping[str, float] | None) -> None:
        if self.logging_interval == "step" or (self.logging_interval is None and logs):
            run.log(self.values(run))

    def on_train_epoch_start(self, run: RunView) -> None:
        if self.logging_interval == "epoch":
            run.log(self.values(run))
