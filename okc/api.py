"""The Python API: everything the ``okc`` command does, callable from scripts.

exp = okc.load_experiment("experiments/shapes.yml", ["trainer.max_epochs=2"])
okc.check(exp)          # [] when every name resolves and every params binds
result = okc.fit(exp)   # trains; result.metrics, result.checkpoint
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from okc.config.load import load_experiment
from okc.config.schema import Experiment
from okc.errors import ConfigError

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


__all__ = ["ExperimentLike", "check", "load_experiment"]
