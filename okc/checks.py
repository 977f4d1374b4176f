"""``okc check``: every problem an experiment has that can be found without building it.

Names are resolved against their registries and ``params`` bound against constructor signatures;
files the experiment points at must exist. Nothing heavy is built: no model, no dataset. (The
module is ``checks``: a module ``okc.check`` would replace the function ``okc.check`` on the
package once imported.)
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from okc.config.bind import entry_problems
from okc.config.imports import import_user_modules
from okc.config.schema import Experiment
from okc.errors import ConfigError, at, under
from okc.loggers import check_logger
from okc.models import MODEL_KEYS, check_model_params
from okc.models.parts import ChecksParams
from okc.registry import CALLBACKS, TASKS


def check_experiment(exp: Experiment) -> list[ConfigError]:
    """All problems found, in config order (empty when the experiment is good to run)."""
    try:
        import_user_modules(exp)
    except ConfigError as err:
        return [err]
    _warn_precision(exp)
    return [
        *_check_task(exp),
        *_check_losses(exp),
        *_check_optimization(exp),
        *_check_data(exp),
        *_check_metrics(exp),
        *_check_callbacks(exp),
        *_check_logger(exp),
        *_check_files(exp),
    ]


def _check_task(exp: Experiment) -> list[ConfigError]:
    try:
        with at("task.name"):
            task_cls = TASKS.get(exp.task.name)
    except ConfigError as err:
        # The rest of task.params is still worth checking: the model keys (backbone, neck,
        # pooling, head and their params) mean the same to every okc task.
        model = {k: v for k, v in exp.task.params.items() if k in MODEL_KEYS}
        return [err, *(under("task.params", check_model_params(model)) if model else [])]
    errors = under("task.params", task_cls.param_problems(exp.task.params))
    return errors + _check_mappings(exp, tuple(task_cls.declared_outputs(exp.task.params)))


def _check_mappings(exp: Experiment, produced: tuple[str, ...]) -> list[ConfigError]:
    """Loss and metric mappings must name outputs the task produces."""
    if not produced:
        return []  # a task that does not declare its outputs is checked at its first batch
    sources = [
        (f"joint_loss.losses.{i}.mapping.{arg}", key)
        for i, loss in enumerate(exp.joint_loss.losses if exp.joint_loss else ())
        for arg, key in loss.mapping.items()
    ] + [
        (f"metrics.{i}.mapping.{arg}", key)
        for i, metric in enumerate(exp.metrics)
        for arg, key in metric.mapping.items()
    ]
    listed = ", ".join(produced)
    return [
        ConfigError(path, f"{exp.task.name} produces no '{key}'; it produces: {listed}")
        for path, key in sources
        if key not in produced
    ]


def _check_losses(exp: Experiment) -> list[ConfigError]:
    if exp.joint_loss is None:
        return []
    from okc.losses import check_joint_loss

    return under("joint_loss", check_joint_loss(exp.joint_loss))


def _check_optimization(exp: Experiment) -> list[ConfigError]:
    from okc.optim import check_optimization

    return under("optimization", check_optimization(exp.optimization))


def _check_data(exp: Experiment) -> list[ConfigError]:
    from okc.data import check_data

    return check_data(exp.data)


def _check_metrics(exp: Experiment) -> list[ConfigError]:
    from okc.metrics import check_metrics

    errors = under("metrics", check_metrics(exp.metrics))
    for i, metric in enumerate(exp.metrics):
        for key, phase in (("val_dataloader_idxs", "VALID"), ("test_dataloader_idxs", "TEST")):
            loaders = len(getattr(exp.data, phase))
            bad = [j for j in getattr(metric, key) if j >= loaders > 0]
            if bad and phase.lower() in {p.value for p in metric.phases}:
                errors.append(
                    ConfigError(
                        f"metrics.{i}.{key}",
                        f"data loader {bad[0]} does not exist; data.{phase} has {loaders}",
                    )
                )
    return errors


def _check_callbacks(exp: Experiment) -> list[ConfigError]:
    errors: list[ConfigError] = []
    for i, cb in enumerate(exp.callbacks):
        p = f"callbacks.{i}"
        problems = under(p, entry_problems(CALLBACKS, cb.name, cb.params))
        target = CALLBACKS.find(cb.name)
        if not problems and isinstance(target, ChecksParams):  # e.g. FreezeUnfreeze's entries
            problems = [
                ConfigError(f"{p}.params.{e.key}", e.message)
                for e in target.param_problems(cb.params)
            ]
        errors += problems
    return errors


def _check_logger(exp: Experiment) -> list[ConfigError]:
    return under("logger", check_logger(exp.logger))


def _check_files(exp: Experiment) -> list[ConfigError]:
    resume = exp.resume_path if exp.resume_path != "auto" else None  # okc.api.resolve_auto
    files: list[tuple[str, str | None]] = [("resume_path", resume)]
    lc = exp.task.load_checkpoint
    if lc is not None:
        files.append(("task.load_checkpoint.base_ckpt_path", lc.base_ckpt_path))
        for name, f in (lc.overridden_name2ckpt_path or {}).items():
            files.append((f"task.load_checkpoint.overridden_name2ckpt_path.{name}", f))
    # a folder is a sharded checkpoint (FSDP2); reading it says if it is incomplete
    return [
        ConfigError(key, f"file not found: {f}")
        for key, f in files
        if f is not None and not Path(f).expanduser().exists()
    ]


def _warn_precision(exp: Experiment) -> None:
    """Half precision on a CPU is allowed but rarely meant: say what it costs."""
    precision = str(exp.trainer.precision)
    if precision.startswith(("32", "64")):
        return
    accelerator = exp.trainer.accelerator
    if accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available()):
        warnings.warn(
            f"trainer.precision={precision} on a CPU is slow: CPUs emulate half-precision "
            "math (a tiny run took 70 s at 16 against 4 s at 32); use precision 32 on CPUs",
            stacklevel=3,
        )
