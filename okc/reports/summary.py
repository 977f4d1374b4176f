"""What a finished run reached: the best and last value of each loss and metric.

"Best" needs a direction. Losses (``loss`` and every ``joint_loss`` tag) are better lower; a
metric is better as its class says (torchmetrics' ``higher_is_better``, found through okc's
metric registry from the run's ``experiment.yml``); a metric whose class does not say, and the
learning rates, get only their last value. Per-step values (``*_step``) are left out: the
epoch means are what a run is judged on.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import attrs
import yaml

from okc.reports.history import RunHistory
from okc.reports.plot import LR, panel_of, panels

Mode = Literal["min", "max"]


@attrs.frozen
class ValueSummary:
    key: str
    last: float
    best: float | None = None
    best_step: int | None = None
    mode: Mode | None = None


def directions(experiment: Mapping[str, Any]) -> dict[str, Mode]:
    """Panel name (``loss``, a loss tag, a metric's tag or name) → which way is better."""
    modes: dict[str, Mode] = {"loss": "min"}
    joint = experiment.get("joint_loss") or {}
    for loss in joint.get("losses") or ():
        if loss.get("tag"):
            modes[str(loss["tag"])] = "min"
    _import_user_modules(experiment)
    from okc.registry import METRICS

    for metric in experiment.get("metrics") or ():
        higher = _higher_is_better(METRICS.find(str(metric.get("name"))), metric.get("params"))
        if higher is not None:
            modes[str(metric.get("tag") or metric.get("name"))] = "max" if higher else "min"
    return modes


def _higher_is_better(cls: Any, params: Mapping[str, Any] | None) -> bool | None:
    """The class's ``higher_is_better``; for torchmetrics' task wrappers (``Accuracy`` builds a
    ``MulticlassAccuracy``), the built metric's."""
    higher = getattr(cls, "higher_is_better", None)
    if higher is None and cls is not None:
        try:
            higher = getattr(cls(**dict(params or {})), "higher_is_better", None)
        except Exception:  # a metric that cannot be built here has no known direction
            return None
    return higher if isinstance(higher, bool) else None


def _import_user_modules(experiment: Mapping[str, Any]) -> None:
    for module in experiment.get("imports") or ():
        with contextlib.suppress(ImportError):  # its metrics show their last value only
            importlib.import_module(str(module))


def read_experiment(run_dir: Path) -> dict[str, Any]:
    """The run's resolved experiment (``experiment.yml``), or {} when the folder has none."""
    path = Path(run_dir) / "experiment.yml"
    if not path.is_file():
        return {}
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    return data if isinstance(data, dict) else {}


def summarize(
    history: RunHistory, experiment: Mapping[str, Any] | None = None
) -> list[ValueSummary]:
    """One row per epoch-level key, in the order of ``okc plot``'s panels."""
    experiment = read_experiment(history.run_dir) if experiment is None else experiment
    modes = directions(experiment)
    order = {name: i for i, name in enumerate(panels([history]))}
    keys = [k for k in history.series if not k.endswith("_step")]
    keys.sort(key=lambda k: (order[panel_of(k)], k))
    return [_row(k, history.series[k], modes.get(panel_of(k))) for k in keys]


def _row(key: str, points: list[tuple[int, float]], mode: Mode | None) -> ValueSummary:
    last = points[-1][1]
    finite = [(s, v) for s, v in points if v == v]  # nan never wins
    if mode is None or panel_of(key) == LR or not finite:
        return ValueSummary(key, last)
    pick = min if mode == "min" else max
    step, best = pick(finite, key=lambda p: p[1])
    return ValueSummary(key, last, best, step, mode)
