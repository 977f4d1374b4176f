"""The learning-rate range test (``okc find-lr``, TorchOk's ``+mode=find_lr``).

Train for up to ``num_steps`` optimizer steps while the learning rate grows exponentially from
``min_lr`` to ``max_lr``; record the loss of each step and smooth it (an exponential moving
average with bias correction, ``beta`` 0.98, as fastai and Lightning do). Stop early when the
smoothed loss exceeds ``early_stop_threshold`` times the best one seen (the loss has diverged) or
is not finite. Afterwards the model and optimizer states are restored to what they were before
the sweep.

The suggestion is the learning rate where the smoothed loss falls fastest: the minimum of its
gradient with respect to ``log10(lr)``, skipping the first ``skip_begin`` (10) points, where the
average is still settling, and the last one (Lightning's rule). Too few points for that, or a
loss that never falls, gives no suggestion.

Every param group follows the sweep in proportion to its configured lr (a group with
``lr_mult: 0.1`` stays at a tenth), so ``paramwise_cfg`` keeps its meaning; the reported lr is
that of the first optimizer's first group.
"""

from __future__ import annotations

import copy
import csv
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import numpy as np

from okc.config.schema import Experiment
from okc.engine.hooks import Callback, RunView
from okc.errors import ConfigError

SKIP_BEGIN, SKIP_END = 10, 1


@attrs.frozen
class LRFindResult:
    """The sweep: one row per step (``lrs``, ``losses``, ``smoothed``) and what it suggests."""

    lrs: tuple[float, ...]
    losses: tuple[float, ...]
    smoothed: tuple[float, ...]
    suggestion: float | None
    stop_reason: str
    csv: Path | None = None
    png: Path | None = None
    note: str = ""


def sweep_experiment(exp: Experiment, *, num_steps: int) -> Experiment:
    """The experiment the sweep trains: ``num_steps`` steps logging every step, on TRAIN only,
    without schedulers (the sweep sets the lr), checkpoints or the experiment's callbacks, and
    with metrics written to CSV/JSONL only."""
    trainer = attrs.evolve(
        exp.trainer, max_steps=num_steps, max_epochs=None, min_epochs=None, fast_dev_run=False,
        log_every_n_steps=1, num_sanity_val_steps=0, enable_checkpointing=False,
    )  # fmt: skip
    optimization = tuple(attrs.evolve(o, scheduler=None) for o in exp.optimization)
    logger = None
    if exp.logger is not None:
        logger = attrs.evolve(exp.logger, name="CSVLogger", params={})
    data = attrs.evolve(exp.data, VALID=(), TEST=(), PREDICT=())
    return attrs.evolve(exp, trainer=trainer, optimization=optimization, callbacks=(),
                        logger=logger, data=data, mode=None)  # fmt: skip


def smooth(losses: list[float], beta: float = 0.98) -> list[float]:
    """Exponential moving average with bias correction."""
    out, avg = [], 0.0
    for i, loss in enumerate(losses):
        avg = beta * avg + (1 - beta) * loss
        out.append(avg / (1 - beta ** (i + 1)))
    return out


def suggest(lrs: list[float], smoothed: list[float]) -> float | None:
    """The lr of the steepest fall of the smoothed loss per decade of lr (see the module doc)."""
    if len(lrs) < SKIP_BEGIN + SKIP_END + 3:
        return None
    x = np.log10(np.asarray(lrs, dtype=np.float64))
    y = np.asarray(smoothed, dtype=np.float64)
    window = slice(SKIP_BEGIN, len(lrs) - SKIP_END)
    slope = np.gradient(y[window], x[window])
    best = int(np.argmin(slope))
    # a flat loss has slopes of float rounding (np.gradient on uneven float spacing gives
    # -2e-16), not a fall: only a fall larger than rounding of the loss's size counts
    if not slope[best] < -1e-9 * max(1.0, float(np.abs(y[window]).max())):
        return None
    return float(lrs[SKIP_BEGIN + best])


class LRFinder(Callback):
    """Drives the sweep from inside ``fit``; ``result()`` afterwards."""

    def __init__(
        self,
        *,
        min_lr: float = 1e-8,
        max_lr: float = 1.0,
        num_steps: int = 100,
        early_stop_threshold: float | None = 4.0,
        beta: float = 0.98,
    ) -> None:
        if not 0 < min_lr < max_lr:
            raise ConfigError("find_lr", f"needs 0 < min_lr < max_lr, got {min_lr}, {max_lr}")
        if num_steps < 2:
            raise ConfigError("find_lr.num_steps", f"must be at least 2, got {num_steps}")
        self.min_lr, self.max_lr, self.num_steps = min_lr, max_lr, num_steps
        self.threshold, self.beta = early_stop_threshold, beta
        self.lrs: list[float] = []
        self.losses: list[float] = []
        self.stop_reason = f"the sweep ran its {num_steps} steps"
        self._ratios: list[list[float]] = []
        self._saved: dict[str, Any] | None = None
        self._best = math.inf

    def lr_at(self, step: int) -> float:
        """The lr of step ``step`` (0-based): exponential from min_lr to max_lr."""
        return self.min_lr * (self.max_lr / self.min_lr) ** (step / (self.num_steps - 1))

    def _set_lr(self, run: RunView, lr: float) -> None:
        for opt, ratios in zip(run.optimizers, self._ratios, strict=True):
            for group, ratio in zip(opt.param_groups, ratios, strict=True):
                group["lr"] = lr * ratio

    def on_fit_start(self, run: RunView) -> None:
        if not run.optimizers:
            raise ConfigError("optimization", "find-lr needs an optimizer")
        reference = run.optimizers[0].param_groups[0]["lr"] or 1.0
        self._ratios = [[g["lr"] / reference for g in opt.param_groups] for opt in run.optimizers]
        self._saved = {
            "model": copy.deepcopy(run.model.state_dict()),
            "optimizers": [copy.deepcopy(opt.state_dict()) for opt in run.optimizers],
        }
        self._set_lr(run, self.lr_at(0))

    def on_train_batch_end(self, run: RunView, logs: Mapping[str, float] | None) -> None:
        if not logs or "train/loss_step" not in logs:  # the sweep logs every step
            return
        step = len(self.losses)
        self.lrs.append(self.lr_at(step))
        self.losses.append(float(logs["train/loss_step"]))
        value = smooth(self.losses, self.beta)[-1]
        self._best = min(self._best, value)
        if not math.isfinite(value):
            self.stop_reason = f"the loss is not finite at lr {self.lrs[-1]:.3g}"
            run.request_stop(f"find-lr: {self.stop_reason}")
        elif self.threshold is not None and step > 0 and value > self.threshold * self._best:
            self.stop_reason = (
                f"the loss diverged at lr {self.lrs[-1]:.3g} (smoothed loss above "
                f"{self.threshold:g}x its minimum)"
            )
            run.request_stop(f"find-lr: {self.stop_reason}")
        elif step + 1 < self.num_steps:
            self._set_lr(run, self.lr_at(step + 1))

    def note_nonfinite(self) -> None:
        """The loop stopped on a non-finite loss before this callback saw it."""
        lr = self.lr_at(len(self.losses))
        self.stop_reason = f"the loss is not finite at lr {lr:.3g}"

    def teardown(self, run: RunView, stage: str) -> None:
        """Put the model and the optimizers back as they were before the sweep."""
        if self._saved is not None:
            run.model.load_state_dict(self._saved["model"])
            for opt, state in zip(run.optimizers, self._saved["optimizers"], strict=True):
                opt.load_state_dict(state)
            self._saved = None

    def result(self) -> LRFindResult:
        finite = [(lr, loss) for lr, loss in zip(self.lrs, self.losses, strict=True)
                  if math.isfinite(loss)]  # fmt: skip
        lrs = [lr for lr, _ in finite]
        smoothed = smooth([loss for _, loss in finite], self.beta)
        return LRFindResult(
            lrs=tuple(self.lrs), losses=tuple(self.losses),
            smoothed=tuple(smooth(self.losses, self.beta)),
            suggestion=suggest(lrs, smoothed), stop_reason=self.stop_reason,
        )  # fmt: skip


def write_result(result: LRFindResult, stem: Path) -> LRFindResult:
    """``stem.csv`` (step, lr, loss, smoothed_loss) and, with matplotlib, ``stem.png``."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    csv_path = stem.with_suffix(".csv")
    with csv_path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["step", "lr", "loss", "smoothed_loss"])
        rows = zip(result.lrs, result.losses, result.smoothed, strict=True)
        for step, (lr, loss, smoothed) in enumerate(rows):
            writer.writerow([step, f"{lr:.6e}", f"{loss:.6g}", f"{smoothed:.6g}"])
    try:
        png = _plot(result, stem.with_suffix(".png"))
        note = ""
    except ImportError:
        png = None
        note = "matplotlib is not installed, so no plot was drawn: pip install 'okc[plot]'"
    return attrs.evolve(result, csv=csv_path, png=png, note=note)


def _plot(result: LRFindResult, path: Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 4), dpi=100)
    FigureCanvasAgg(figure)
    ax = figure.add_subplot()
    ax.plot(result.lrs, result.losses, color="0.75", linewidth=1, label="loss")
    ax.plot(result.lrs, result.smoothed, color="C0", label="smoothed loss")
    if result.suggestion is not None:
        ax.axvline(result.suggestion, color="C3", linestyle="--",
                   label=f"suggestion {result.suggestion:.2e}")  # fmt: skip
    finite = [v for v in result.smoothed if math.isfinite(v)]
    if finite:  # the raw loss of a diverging sweep would squash the curve that matters
        low, high = min(finite), max(finite)
        ax.set_ylim(low - 0.05 * (high - low), high + 0.1 * (high - low) + 1e-12)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("loss")
    ax.legend()
    figure.tight_layout()
    figure.savefig(path)
    return path
