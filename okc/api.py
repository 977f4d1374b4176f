"""The Python API: everything the ``okc`` command does, callable from scripts.

exp = okc.load_experiment("experiments/shapes.yml", ["trainer.max_epochs=2"])
okc.check(exp)          # [] when every name resolves and every params binds
result = okc.fit(exp)   # trains; result.metrics, result.checkpoint
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from okc.config.load import load_experiment
from okc.config.schema import Experiment
from okc.errors import ConfigError

if TYPE_CHECKING:
    from okc.engine.loop import FitResult

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


def fit(exp: ExperimentLike, overrides: Iterable[str] = ()) -> FitResult:
    """Train on TRAIN, validating on VALID; returns where the run wrote and what it reached."""
    from okc.engine.loop import Loop

    return Loop(_experiment(exp, overrides), stage="fit").fit()


def validate(
    exp: ExperimentLike, overrides: Iterable[str] = (), *, checkpoint: str | Path | None = None
) -> dict[str, float]:
    """Metrics (and losses) on VALID with the weights of ``checkpoint`` (or ``resume_path``)."""
    from okc.engine.loop import Loop

    return Loop(_experiment(exp, overrides), stage="validate").validate(checkpoint)


def test(
    exp: ExperimentLike, overrides: Iterable[str] = (), *, checkpoint: str | Path | None = None
) -> dict[str, float]:
    """Metrics on TEST with the weights of ``checkpoint`` (or ``resume_path``)."""
    from okc.engine.loop import Loop

    return Loop(_experiment(exp, overrides), stage="test").test(checkpoint)


def predict(
    exp: ExperimentLike,
    overrides: Iterable[str] = (),
    *,
    checkpoint: str | Path | None = None,
    output: str | Path | None = None,
) -> Path:
    """Predictions on PREDICT written to ``output`` (default: the run folder); returns the CSV."""
    from okc.engine.loop import Loop

    loop = Loop(_experiment(exp, overrides), stage="predict")
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
