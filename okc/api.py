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
from okc.errors import ConfigError, ConfigErrors

if TYPE_CHECKING:
    from okc.callbacks.lr_finder import LRFindResult
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
    from okc.checks import check_experiment

    return check_experiment(_experiment(exp, overrides))


def _checked(exp: ExperimentLike, overrides: Iterable[str] = ()) -> Experiment:
    """The experiment, after ``check`` found nothing: a run reports every problem at once
    instead of stopping at the first one it builds."""
    experiment = _experiment(exp, overrides)
    errors = check(experiment)
    if errors:
        raise ConfigErrors(errors)
    return experiment


def _loop(exp: Experiment, stage: str) -> tuple[Loop, list[Callback]]:
    """A loop for ``stage`` with the experiment's callbacks and okc's defaults."""
    from okc.callbacks.defaults import build_callbacks
    from okc.engine.loop import Loop

    callbacks = build_callbacks(exp, stage)
    return Loop(exp, callbacks=callbacks), callbacks


def fit(exp: ExperimentLike, overrides: Iterable[str] = ()) -> FitResult:
    """Train on TRAIN, validating on VALID; returns where the run wrote and what it reached."""
    from okc.callbacks.defaults import checkpoint_paths

    loop, callbacks = _loop(_checked(exp, overrides), "fit")
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
    from okc.exports import export_experiment

    return export_experiment(
        _experiment(exp, overrides), checkpoint=checkpoint, output=output, fmt=fmt
    )


def find_lr(
    exp: ExperimentLike,
    overrides: Iterable[str] = (),
    *,
    min_lr: float = 1e-8,
    max_lr: float = 1.0,
    num_steps: int = 100,
    early_stop_threshold: float | None = 4.0,
    output: str | Path | None = None,
) -> LRFindResult:
    """The learning-rate range test on TRAIN (``okc.callbacks.lr_finder`` says how it works and
    how the suggestion is chosen); writes the curve to ``output`` (default: ``lr_find.csv`` and
    ``lr_find.png`` in the sweep's run folder) and returns it with the suggested lr."""
    from okc.callbacks.defaults import build_callbacks
    from okc.callbacks.lr_finder import LRFinder, sweep_experiment, write_result
    from okc.engine.guard import NonFiniteLossError
    from okc.engine.loop import Loop

    sweep = sweep_experiment(_checked(exp, overrides), num_steps=num_steps)
    finder = LRFinder(min_lr=min_lr, max_lr=max_lr, num_steps=num_steps,
                      early_stop_threshold=early_stop_threshold)  # fmt: skip
    loop = Loop(sweep, callbacks=[*build_callbacks(sweep, "fit"), finder])
    try:
        loop.fit()
    except NonFiniteLossError:
        if not finder.losses:
            raise
        finder.note_nonfinite()  # the sweep reached a diverging lr: its natural end
    stem = Path(output).expanduser().with_suffix("") if output else loop.run_dir / "lr_find"
    return write_result(finder.result(), stem)
