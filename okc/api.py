"""The Python API: everything the ``okc`` command does, callable from scripts.

exp = okc.load_experiment("experiments/shapes.yml", ["trainer.max_epochs=2"])
okc.check(exp)          # [] when every name resolves and every params binds
result = okc.fit(exp)   # trains; result.metrics, result.checkpoint
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import attrs

from okc.config.load import load_experiment
from okc.config.schema import Experiment
from okc.errors import ConfigError

if TYPE_CHECKING:
    from okc.engine.hooks import Callback
    from okc.engine.loop import FitResult, Loop

ExperimentLike = Experiment | str | Path


def _experiment(exp: ExperimentLike, overrides: Iterable[str] = ()) -> Experiment:
    if isinstance(exp, Experiment):
        if overrides:
            from okc.config.load import experiment_from_data

            return experiment_from_data(exp.to_dict(), overrides)
        return exp
    return load_experiment(exp, overrides)


def check(exp: ExperimentLike, overrides: Iterable[str] = ()) -> list[ConfigError]:
    """Every problem found without building anything (empty list: good to run)."""
    from okc.check import check_experiment

    return check_experiment(_experiment(exp, overrides))


def _loop(exp: Experiment, stage: str) -> tuple[Loop, list[Callback]]:
    """A loop for ``stage`` with the experiment's callbacks and okc's defaults."""
    from okc.callbacks.defaults import build_callbacks
    from okc.engine.loop import Loop

    callbacks = build_callbacks(exp, stage)
    return Loop(exp, callbacks=callbacks), callbacks


def fit(exp: ExperimentLike, overrides: Iterable[str] = ()) -> FitResult:
    """Train on TRAIN, validating on VALID; returns where the run wrote and what it reached."""
    from okc.callbacks.defaults import checkpoint_paths

    loop, callbacks = _loop(_experiment(exp, overrides), "fit")
    result = loop.fit()
    best, last = checkpoint_paths(callbacks)
    return attrs.evolve(result, best_checkpoint=best, last_checkpoint=last)


def validate(
    exp: ExperimentLike, overrides: Iterable[str] = (), *, checkpoint: str | Path | None = None
) -> dict[str, float]:
    """Metrics (and losses) on VALID with the weights of ``checkpoint`` (or ``resume_path``)."""
    return _loop(_experiment(exp, overrides), "validate")[0].validate(checkpoint)


def test(
    exp: ExperimentLike, overrides: Iterable[str] = (), *, checkpoint: str | Path | None = None
) -> dict[str, float]:
    """Metrics on TEST with the weights of ``checkpoint`` (or ``resume_path``)."""
    return _loop(_experiment(exp, overrides), "test")[0].test(checkpoint)


def predict(
    exp: ExperimentLike,
    overrides: Iterable[str] = (),
    *,
    checkpoint: str | Path | None = None,
    output: str | Path | None = None,
) -> Path:
    """Predictions on PREDICT written to ``output`` (default: the run folder); returns the CSV."""
    loop, _ = _loop(_experiment(exp, overrides), "predict")
    return loop.predict(checkpoint, Path(output) if output else None)


def export(
    exp: ExperimentLike,
    overrides: Iterable[str] = (),
    *,
    checkpoint: str | Path | None = None,
    output: str | Path | None = None,
    fmt: str = "onnx",
) -> list[Path]:
    """Export ``task.forward`` to ONNX and/or TorchScript; returns the written files."""
    from okc.export import export_experiment

    return export_experiment(
        _experiment(exp, overrides), checkpoint=checkpoint, output=output, fmt=fmt
    )
