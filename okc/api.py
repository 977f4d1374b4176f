"""The Python API: everything the ``okc`` command does, callable from scripts.

exp = okc.load_experiment("experiments/shapes.yml", ["trainer.max_epochs=2"])
okc.check(exp)          # [] when every name resolves and every params binds
result = okc.fit(exp)   # trains; result.metrics, result.checkpoint

With ``trainer.devices`` > 1 (outside ``torchrun``) fit, validate, test and predict start one
process per device themselves (``okc.launch``) and return rank 0's result.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from okc.config.load import load_experiment
from okc.config.schema import Experiment
from okc.errors import ConfigError, ConfigErrors

if TYPE_CHECKING:
    from okc.callbacks.lr_finder import LRFindResult
    from okc.engine.hooks import Callback
    from okc.engine.loop import FitResult, Loop
    from okc.reports.catalog import Listing
    from okc.reports.summary import ValueSummary

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


def _as_rank(exp: Experiment) -> contextlib.AbstractContextManager[None]:
    """Under torchrun or srun, a failure ends every rank's log with one line naming the rank
    that failed and its error (``okc.launch.rank_failures``)."""
    from okc.engine.cluster import detect
    from okc.launch import rank_failures

    job = detect(exp.trainer)
    return rank_failures(job.world_size, job.rank)


def _launches(exp: Experiment) -> bool:
    """Whether ``trainer.devices`` asks for processes this one must start (not under torchrun)."""
    from okc.launch import in_process_group, num_processes

    return not in_process_group(exp.trainer) and num_processes(exp.trainer) > 1


def _in_processes(stage: str, exp: Experiment, **kwargs: Any) -> Any:
    """``stage`` run by one process per device (``okc.launch``); rank 0's result."""
    from okc.launch import launch, num_processes

    args = (stage, exp.to_dict(), kwargs)
    return launch(_stage_worker, args, num_processes=num_processes(exp.trainer),
                  forward=exp.trainer.preempt_signals)  # fmt: skip


def _stage_worker(stage: str, data: dict[str, Any], kwargs: dict[str, Any]) -> Any:
    """One rank of a launched stage; the experiment travels as plain data."""
    stages = {"fit": fit, "validate": validate, "test": test, "predict": predict}
    return stages[stage](Experiment.from_dict(data), **kwargs)


def _weights(exp: Experiment, checkpoint: str | Path | None) -> str | Path | None:
    """``best``/``last`` → that checkpoint of the experiment's latest run; a path as is;
    nothing with ``resume_path: auto`` → the newest checkpoint of the auto run."""
    from okc.reports.runs import resolve_checkpoint

    if checkpoint is None and exp.resume_path == AUTO:
        found = newest_checkpoint(exp)
        if found is None:
            raise ConfigError("resume_path", f"auto: no checkpoint in {_auto_base(exp)}* yet "
                              "(okc fit with resume_path=auto writes them)")  # fmt: skip
        return found
    return resolve_checkpoint(exp, checkpoint)


# --- resume_path: auto ----------------------------------------------------------------------------

AUTO = "auto"


def resolve_auto(exp: Experiment) -> Experiment:
    """``resume_path: auto``: the run writes to a fixed folder, ``<log_dir>/<name>/auto`` (or
    ``logger.timestamp``; a rerun writes ``auto-1``, ``auto-2``, ... beside it) and resumes from
    the newest checkpoint written there, or starts fresh when there is none. So a job that a
    cluster requeued, or that torchrun restarted, or that was simply rerun, continues by itself.
    Any other ``resume_path`` is returned as is."""
    if exp.resume_path != AUTO:
        return exp
    from okc.loggers.run import logger_spec

    spec = logger_spec(exp)
    exp = attrs.evolve(exp, logger=attrs.evolve(spec, timestamp=spec.timestamp or AUTO))
    found = newest_checkpoint(exp)
    return attrs.evolve(exp, resume_path=str(found) if found else None)


def _auto_base(exp: Experiment) -> Path:
    from okc.loggers.run import logger_spec
    from okc.reports.runs import experiment_log_dir

    return experiment_log_dir(exp) / (logger_spec(exp).timestamp or AUTO)


def newest_checkpoint(exp: Experiment) -> Path | None:
    """The newest complete checkpoint that can resume, in the auto run's folders: a file
    (written atomically, so complete once it exists) or a sharded checkpoint's folder (renamed
    into place once complete). Weights-only and unreadable ones are passed over."""
    from okc.engine.checkpoint import read_checkpoint
    from okc.errors import OkcError

    base = _auto_base(exp)
    folders = [base, *base.parent.glob(f"{base.name}-*")] if base.parent.is_dir() else []
    found = [p for d in folders if d.is_dir() for p in d.rglob("*.ckpt")]
    for path in sorted(found, key=lambda p: p.stat().st_mtime, reverse=True):
        try:  # a sharded folder's read_checkpoint reads its okc.pt (refused until complete)
            if not read_checkpoint(path).get("weights_only"):
                return path
        except OkcError:
            continue
    return None


def fit(exp: ExperimentLike, overrides: Iterable[str] = ()) -> FitResult:
    """Train on TRAIN, validating on VALID; returns where the run wrote and what it reached.

    ``resume_path: auto`` continues from the newest checkpoint of the auto run (``resolve_auto``).
    """
    from okc.callbacks.defaults import checkpoint_paths

    experiment = resolve_auto(_checked(exp, overrides))
    if _launches(experiment):
        return _in_processes("fit", experiment)
    with _as_rank(experiment):
        loop, callbacks = _loop(experiment, "fit")
        result = loop.fit()
    best, last = checkpoint_paths(callbacks)
    return attrs.evolve(result, best_checkpoint=best, last_checkpoint=last)


def validate(
    exp: ExperimentLike, overrides: Iterable[str] = (), *, checkpoint: str | Path | None = None
) -> dict[str, float]:
    """Metrics (and losses) on VALID with the weights of ``checkpoint`` (or ``resume_path``).

    ``checkpoint`` may be ``"best"`` or ``"last"``: that checkpoint of the experiment's latest
    run (the same for test, predict and export)."""
    experiment = _experiment(exp, overrides)
    checkpoint = _weights(experiment, checkpoint)
    if _launches(experiment):
        return _in_processes("validate", experiment, checkpoint=checkpoint)
    with _as_rank(experiment):
        return _loop(experiment, "validate")[0].validate(checkpoint)


def test(
    exp: ExperimentLike, overrides: Iterable[str] = (), *, checkpoint: str | Path | None = None
) -> dict[str, float]:
    """Metrics on TEST with the weights of ``checkpoint`` (or ``resume_path``)."""
    experiment = _experiment(exp, overrides)
    checkpoint = _weights(experiment, checkpoint)
    if _launches(experiment):
        return _in_processes("test", experiment, checkpoint=checkpoint)
    with _as_rank(experiment):
        return _loop(experiment, "test")[0].test(checkpoint)


def predict(
    exp: ExperimentLike,
    overrides: Iterable[str] = (),
    *,
    checkpoint: str | Path | None = None,
    output: str | Path | None = None,
) -> Path:
    """Predictions on PREDICT written to ``output`` (default: the run folder); returns the CSV."""
    experiment = _experiment(exp, overrides)
    checkpoint = _weights(experiment, checkpoint)
    if _launches(experiment):
        return _in_processes("predict", experiment, checkpoint=checkpoint, output=output)
    with _as_rank(experiment):
        loop, _ = _loop(experiment, "predict")
        return loop.predict(checkpoint, Path(output) if output else None)


def export(
    exp: ExperimentLike,
    overrides: Iterable[str] = (),
    *,
    checkpoint: str | Path | None = None,
    output: str | Path | None = None,
    fmt: str = "onnx",
    quantize: str | None = None,
    calibration_batches: int = 8,
) -> list[Path]:
    """Export ``task.forward`` to ONNX, TorchScript and/or a pt2 (AOTInductor) package; returns
    the written files. ``quantize="int8"`` adds a statically quantized ONNX file, calibrated on
    ``calibration_batches`` VALID batches, and a report (``.int8.json``): its VALID accuracy
    against fp32 and the latency of each format (``okc.exports.quantize`` says how)."""
    from okc.exports import export_experiment

    experiment = _experiment(exp, overrides)
    checkpoint = _weights(experiment, checkpoint)
    return export_experiment(
        experiment, checkpoint=checkpoint, output=output, fmt=fmt, quantize=quantize,
        calibration_batches=calibration_batches,
    )  # fmt: skip


def _one_process(exp: Experiment, what: str) -> Experiment:
    """``exp`` on one device, with a warning when ``trainer.devices`` asked for more."""
    if not _launches(exp):
        return exp
    import warnings

    warnings.warn(f"{what} runs in one process; trainer.devices={exp.trainer.devices!r} is "
                  "used by fit, validate, test and predict", stacklevel=3)  # fmt: skip
    return attrs.evolve(exp, trainer=attrs.evolve(exp.trainer, devices=1))


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

    sweep = sweep_experiment(_one_process(_checked(exp, overrides), "find-lr"), num_steps=num_steps)
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


# --- around a run: its curves, its summary, the component names ---------------------------------


def plot(*runs: str | Path, output: str | Path | None = None) -> Path:
    """A PNG of the runs' curves (losses, metrics, learning rates; several runs overlaid).

    Each of ``runs`` is a run folder, a folder above runs (every run below it) or an experiment
    file (its latest training run). ``output`` defaults to ``curves.png`` in the run folder (one
    run) or in the folder the runs share.
    """
    from okc.reports.history import read_runs
    from okc.reports.plot import default_output, plot_runs
    from okc.reports.runs import latest_run

    folders = [
        latest_run(load_experiment(r), having="training") if _experiment_file(r) else r
        for r in runs
    ]
    histories = read_runs(folders)
    return plot_runs(histories, output or default_output(histories))


def _experiment_file(path: str | Path) -> bool:
    from okc.config.load import SUFFIXES

    return Path(path).is_file() and Path(path).suffix in SUFFIXES


def summarize(run_dir: str | Path) -> list[ValueSummary]:
    """Each loss and metric of a run: last value, and best value and step where the direction is
    known (``okc.reports.summary`` says how)."""
    from okc.reports.history import read_run
    from okc.reports.summary import summarize as summarize_run

    return summarize_run(read_run(run_dir))


def list_components(
    kind: str, pattern: str | None = None, *, library: bool = False, imports: Iterable[str] = ()
) -> Listing:
    """The names a registry resolves (``okc list``): okc's own with a description and params;
    library names (timm, torchmetrics, ...) with a ``pattern`` (``resnet*``) or ``library``.
    ``imports`` are modules of your own components to import first."""
    import importlib

    from okc.reports.catalog import list_components as listing

    for module in imports:
        try:
            importlib.import_module(module)
        except ImportError as err:
            raise ConfigError("imports", f"cannot import '{module}': {err}") from err
    return listing(kind, pattern, library=library)
