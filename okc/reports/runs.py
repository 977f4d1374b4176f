"""An experiment's runs on disk: its latest run folder and that run's ``best``/``last``
checkpoint, so ``okc export EXP --checkpoint best`` and ``okc plot EXP`` need no copied path.

An experiment's runs are the folders under its log folder (``logger.log_dir/<experiment name>``,
``~/.cache/okc/logs/<name>`` by default) holding an ``experiment.yml``; the latest is the one
whose ``experiment.yml`` was written last (a run writes it when it starts), among those that
saved a checkpoint (for ``best``/``last``) or logged training values (for ``okc plot``):
``okc validate`` and ``okc test`` write run folders too. ``last`` is the
run's ``last.ckpt`` (else its newest checkpoint); ``best`` is the best checkpoint its
``ModelCheckpoint`` recorded in that last checkpoint (without a ``monitor``, the latest save).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from okc.config.schema import Experiment
from okc.engine.checkpoint import read_checkpoint
from okc.errors import OkcError
from okc.loggers.run import logger_spec

Which = Literal["best", "last"]
CHECKPOINT_KEYWORDS = ("best", "last")


def experiment_log_dir(exp: Experiment) -> Path:
    """The folder holding an experiment's runs (a run folder adds the timestamp)."""
    spec = logger_spec(exp)
    name = spec.experiment_name or exp.name or "default"
    if spec.name == "MLFlowLoggerX" and spec.params.get("run_name"):
        name = str(spec.params["run_name"])  # TorchOk's folder for this logger
    return Path(spec.log_dir).expanduser() / name


def experiment_runs(exp: Experiment) -> list[Path]:
    """The experiment's run folders, oldest first."""
    base = experiment_log_dir(exp)
    found = [p.parent for p in base.rglob("experiment.yml")] if base.is_dir() else []
    return sorted(found, key=lambda d: ((d / "experiment.yml").stat().st_mtime, str(d)))


def latest_run(exp: Experiment, *, having: Literal["checkpoint", "training"]) -> Path:
    """The experiment's latest run that saved a checkpoint, or that logged training values."""
    test = _has_checkpoint if having == "checkpoint" else _has_training_logs
    runs = [d for d in experiment_runs(exp) if test(d)]
    if not runs:
        what = "a checkpoint" if having == "checkpoint" else "training values"
        raise OkcError(f"no run of experiment '{exp.name}' with {what} in "
                       f"{experiment_log_dir(exp)} yet (okc fit writes one)")  # fmt: skip
    return runs[-1]


def _has_checkpoint(run_dir: Path) -> bool:
    return any(run_dir.rglob("*.ckpt"))


def _has_training_logs(run_dir: Path) -> bool:
    """Whether a run logged ``train/...`` values (fit did; validate and test do not)."""
    for name in ("metrics.jsonl", "metrics.csv"):
        path = run_dir / name
        if path.is_file():
            with path.open(encoding="utf-8") as f:
                return any('"train/' in line or ",train/" in line for line in f)
    return False


def run_checkpoint(run_dir: Path, which: Which) -> Path:
    """A run folder's ``best`` or ``last`` checkpoint."""
    checkpoints = sorted(Path(run_dir).rglob("*.ckpt"), key=lambda p: p.stat().st_mtime)
    if not checkpoints:
        raise OkcError(f"{run_dir}: this run saved no checkpoint")
    named_last = [p for p in checkpoints if p.name == "last.ckpt"]
    last = named_last[-1] if named_last else checkpoints[-1]
    if which == "last":
        return last
    states = read_checkpoint(last).get("callbacks", {})
    for state in states.values():
        best = state.get("best_model_path") if isinstance(state, dict) else None
        if best and Path(best).exists():  # a file, or a sharded checkpoint's folder
            return Path(best)
    return last  # no ModelCheckpoint recorded a best one: the run's latest weights


def resolve_checkpoint(exp: Experiment, checkpoint: str | Path | None) -> str | Path | None:
    """``best``/``last`` → that checkpoint of the experiment's latest run; anything else as is
    (a path, or None for ``resume_path``)."""
    text = str(checkpoint) if checkpoint is not None else ""
    if text in CHECKPOINT_KEYWORDS and not Path(text).exists():  # a file so named wins
        return run_checkpoint(latest_run(exp, having="checkpoint"), text)  # type: ignore[arg-type]
    return checkpoint
