"""``okc check``: every problem an experiment has that can be found without building it.

Names are resolved against their registries and ``params`` bound against constructor signatures;
files the experiment points at must exist. Nothing heavy is built: no model, no dataset.
"""

from __future__ import annotations

from pathlib import Path

from okc.config.bind import check_component, resolve
from okc.config.imports import import_user_modules
from okc.config.schema import Experiment
from okc.errors import ConfigError
from okc.registry import CALLBACKS, LOGGERS, TASKS


def check_experiment(exp: Experiment) -> list[ConfigError]:
    """All problems found, in config order (empty when the experiment is good to run)."""
    try:
        import_user_modules(exp)
    except ConfigError as err:
        return [err]
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
        task_cls = resolve(TASKS, exp.task.name, path="task.name")
    except ConfigError as err:
        return [err]
    errors = task_cls.check_params(exp.task.params, path="task.params")
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

    return check_joint_loss(exp.joint_loss, path="joint_loss")


def _check_optimization(exp: Experiment) -> list[ConfigError]:
    from okc.optim import check_optimization

    return check_optimization(exp.optimization, path="optimization")


def _check_data(exp: Experiment) -> list[ConfigError]:
    from okc.data import check_data

    return check_data(exp.data)


def _check_metrics(exp: Experiment) -> list[ConfigError]:
    from okc.metrics import check_metrics

    errors = check_metrics(exp.metrics, path="metrics")
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
        errors += check_component(
            CALLBACKS, cb.name, cb.params, name_path=f"{p}.name", params_path=f"{p}.params"
        )
    return errors


def _check_logger(exp: Experiment) -> list[ConfigError]:
    if exp.logger is None:
        return []
    return check_component(
        LOGGERS,
        exp.logger.name,
        exp.logger.params,
        name_path="logger.name",
        params_path="logger.params",
        injected=("run_dir",),
    )


def _check_files(exp: Experiment) -> list[ConfigError]:
    files: list[tuple[str, str | None]] = [("resume_path", exp.resume_path)]
    lc = exp.task.load_checkpoint
    if lc is not None:
        files.append(("task.load_checkpoint.base_ckpt_path", lc.base_ckpt_path))
        for name, f in (lc.overridden_name2ckpt_path or {}).items():
            files.append((f"task.load_checkpoint.overridden_name2ckpt_path.{name}", f))
    return [
        ConfigError(key, f"file not found: {f}")
        for key, f in files
        if f is not None and not Path(f).expanduser().is_file()
    ]
