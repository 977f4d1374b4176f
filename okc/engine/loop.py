"""The loop: fit, validate, test and predict, written to be read top to bottom.

    result = Loop(experiment, callbacks=[...]).fit()

``fit`` is: build the training objects → restore (``resume_path``) → sanity validation → for each
epoch: train batches (``_train_step``: the compiled forward + loss, eager backward and optimizer
step), validation when due, epoch schedulers, callbacks (checkpoints, early stopping) → close.
Host syncs happen only on logging steps, at epoch ends and when saving; each is marked
``# sync point``. The loop's callbacks come from the caller (``okc.api`` adds okc's defaults), and
they see the run through a ``RunView`` (``okc.engine.hooks``).
"""

from __future__ import annotations

import contextlib
import signal
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import torch
from torch import Tensor

from okc.config.imports import import_user_modules
from okc.config.schema import Experiment, Phase
from okc.data import build_pipeline
from okc.data.pipeline import setting_warnings
from okc.engine import cluster, distributed
from okc.engine.build import batch_limit, build_task, limits, warn_unsupported
from okc.engine.checkpoint import Checkpointer, ModelState, RNGState
from okc.engine.guard import NonFiniteGuard
from okc.engine.hooks import Callback, RunView
from okc.engine.precision import Precision
from okc.engine.preempt import Interrupted, Preemption, signal_name
from okc.engine.seed import choose_seed, seed_everything
from okc.engine.state import CallbackStates, OptimizationState, Progress, TrainDataState
from okc.engine.step import TrainingModule, maybe_compile, shard_units
from okc.engine.strategy import select_strategy
from okc.engine.weights import load_evaluation_weights, merge_load_checkpoint
from okc.errors import ConfigError, OkcError, at, under
from okc.loggers import build_run_logger, make_run_dir
from okc.losses import build_joint_loss
from okc.metrics import MetricsManager
from okc.optim import build_optimization, step_schedulers
from okc.tree import map_tensors

NONFINITE_HINT = (
    "Lower the learning rate, check the inputs and targets, or set "
    "trainer.on_nonfinite_loss=skip to skip such batches."
)


@attrs.frozen
class FitResult:
    run_dir: Path
    metrics: dict[str, float]
    epochs: int
    global_step: int
    best_checkpoint: Path | None = None
    last_checkpoint: Path | None = None


class EpochLosses:
    """Running sums of the step losses on the device (no sync per step) and the last values."""

    def __init__(self) -> None:
        self.sums: dict[str, Tensor] = {}
        self.count = 0
        self.last: Mapping[str, Tensor] = {}

    def add(self, values: Mapping[str, Tensor]) -> None:
        for key, value in values.items():
            v = value.detach().float()
            self.sums[key] = self.sums[key] + v if key in self.sums else v
        self.count += 1
        self.last = values

    def means(self, prefix: str) -> dict[str, Tensor]:
        return {f"{prefix}/{k}": v / max(self.count, 1) for k, v in self.sums.items()}


class Loop:
    """Owns one run: its objects, its position (``progress``) and its callbacks."""

    def __init__(self, exp: Experiment, *, callbacks: Sequence[Callback] = ()) -> None:
        self.exp, self.trainer = exp, exp.trainer
        self.stage = "fit"  # each entry point (fit, validate, test, predict) sets its own
        warn_unsupported(exp.trainer)
        import_user_modules(exp)
        self.env = distributed.setup(exp.trainer)
        self.device = self.env.device
        # every rank must shuffle with the same seed, or the data shards overlap
        self.strategy = select_strategy(exp.trainer, self.env)  # the one place that reads it
        self.seed = seed_everything(self.strategy.broadcast_object(choose_seed(exp.seed)))
        self.limits = limits(exp.trainer)
        self.precision = Precision(exp.trainer.precision, self.device)
        self.task = build_task(exp)
        self.task.losses = self._build_losses()
        self.metrics = self._build_metrics()
        self.task.to(self.device)
        self.precision.convert_module(self.task)
        if self.strategy.channels_last(exp.trainer.channels_last, self.task,
                                       half=self.precision.half):  # fmt: skip
            self.task.to(memory_format=torch.channels_last)
        self.run_dir = self._make_run_dir()
        self.logger = build_run_logger(exp, self.run_dir) if self.env.is_main else None
        self.callbacks = list(callbacks)
        self.run = RunView(self)
        self.progress = Progress()
        self.logged: dict[str, float] = {}  # latest value of every logged key
        self.stop_reason: str | None = None
        self.last_saved: Path | None = None
        # built by fit (validate/test/predict build only an evaluation module)
        self.optimizers: list[Any] = []
        self.train_data: Any = None
        self.train_module: torch.nn.Module | None = None
        self.eval_module: torch.nn.Module | None = None
        self._wrapped: torch.nn.Module | None = None  # the strategy's (DDP, FSDP2) module
        self.num_train_batches = 0
        self.epoch_losses = EpochLosses()
        self.checkpointer = Checkpointer(
            meta={"experiment": exp.to_dict()},
            is_main=self.env.is_main,
            barrier=self.strategy.barrier,
            sharded=self.strategy.sharded_checkpoints,
            async_save=exp.trainer.checkpoint_async,
        )
        model_state = ModelState(self.task.model, strategy=self.strategy)
        self.checkpointer.add("model", model_state, weights=True)
        self.checkpointer.add("progress", self.progress, weights=True)
        self.checkpointer.add("precision", self.precision)
        self.checkpointer.add("rng", RNGState())
        self.checkpointer.add("callbacks", CallbackStates(self.callbacks))
        self._preempt = Preemption(exp.trainer.preempt_signals)
        self._guard = NonFiniteGuard(self.device)
        self._start = time.monotonic()

    # --- setup ------------------------------------------------------------------------------------

    def _build_losses(self) -> Any:
        if self.exp.joint_loss is None:
            return None
        joint = build_joint_loss(self.exp.joint_loss)
        if self.task.output_keys:
            joint.check_outputs(self.task.output_keys)
        return joint

    def _build_metrics(self) -> MetricsManager:
        manager = MetricsManager(self.exp.metrics).to(self.device)
        if self.task.output_keys:
            for phase in Phase:
                manager.check_outputs(phase, self.task.output_keys)
        return manager

    def _make_run_dir(self) -> Path:
        run_dir = make_run_dir(self.exp) if self.env.is_main else None
        return Path(self.strategy.broadcast_object(str(run_dir) if run_dir else None))

    def _pipelines(self, phase: Phase) -> list[Any]:
        pipelines = []
        for i, item in enumerate(self.exp.data[phase]):
            key = f"data.{phase.name}.{i}"
            for warning in under(key, setting_warnings(item, phase)):
                warnings.warn(str(warning), stacklevel=2)
            with at(key):
                pipelines.append(build_pipeline(
                    item, phase=phase, seed=self.seed, rank=self.env.rank,
                    world_size=self.env.world_size, device=self.device,
                ))  # fmt: skip
        return pipelines

    def _setup_fit(self) -> list[Any]:
        """The training objects, registered with the checkpointer; returns the VALID pipelines."""
        train_items = self.exp.data.TRAIN
        if len(train_items) != 1:
            raise ConfigError("data.TRAIN", f"fit trains on one dataset, found {len(train_items)}")
        if self.task.losses is None:
            raise ConfigError("joint_loss", "fit needs a joint_loss section with at least one loss")
        if not self.exp.optimization:
            raise ConfigError("optimization", "fit needs at least one optimizer")
        if self.exp.task.load_checkpoint is not None and not self.exp.resume_path:
            merge_load_checkpoint(self.task.model, self.exp.task.load_checkpoint)  # whole tensors
        (self.train_data,) = self._pipelines(Phase.TRAIN)
        # Data parallelism first, then compile (torch.compile(DDP(m)) is DDP's supported way).
        # FSDP2 replaces parameters, so the optimizers are built on what it leaves.
        self._wrapped = self.strategy.wrap(TrainingModule(self.task, self.task.losses),
                                           shard_units=shard_units(self.task.model))  # fmt: skip
        self.train_module = self._compiled(self._wrapped)
        self.eval_module = self._compiled(TrainingModule(self.task, self.task.losses))
        self.optimizers = build_optimization(self.exp.optimization, self.task.model)
        source = str(self.exp.resume_path or "checkpoint")
        self.checkpointer.add("optimization", OptimizationState(self.task.model, self.optimizers,
                                                                strategy=self.strategy,
                                                                source=source))  # fmt: skip
        self.checkpointer.add("data", TrainDataState(self.train_data, self.progress))
        return self._pipelines(Phase.VALID)

    def _compiled(self, module: torch.nn.Module) -> torch.nn.Module:
        return maybe_compile(module, setting=self.trainer.compile, device=self.device)

    # --- callbacks, logging, checkpoints ----------------------------------------------------------

    def call(self, hook: str, *args: Any) -> None:
        for cb in self.callbacks:
            if self.env.is_main or not cb.main_process_only:
                getattr(cb, hook)(self.run, *args)

    def log(self, metrics: Mapping[str, float | Tensor]) -> dict[str, float]:
        """Record values under the current step (tensors are read here: a sync point)."""
        values = {k: float(v) for k, v in metrics.items()}  # sync point
        self.logged.update(values)
        if self.logger is not None:
            self.logger.log(values, step=self.progress.global_step, epoch=self.progress.epoch)
        return values

    def save_checkpoint(self, path: str | Path, *, weights_only: bool = False) -> Path:
        """Write the run as it stands (never weights a NaN already reached)."""
        self._guard.check(hint=NONFINITE_HINT)
        self.last_saved = self.checkpointer.save(path, weights_only=weights_only)
        return self.last_saved

    def request_stop(self, reason: str) -> bool:
        """Stop fit at the end of this epoch; refused (False) before ``trainer.min_epochs``."""
        if self.progress.epoch + 1 < (self.trainer.min_epochs or 0):
            return False
        self.stop_reason = reason
        if self.env.is_main:
            print(reason)
        return True

    def request_interrupt(self, signum: int = signal.SIGINT) -> None:
        """What Ctrl-C (or the signal ``signum``) does, for callers that run the loop in a
        thread or a test: stop at the next step boundary, with a resumable checkpoint."""
        self._preempt.request(signum)

    def elapsed(self) -> float:
        """Seconds since the loop was built."""
        return time.monotonic() - self._start

    # --- fit --------------------------------------------------------------------------------------

    def fit(self) -> FitResult:
        self.stage = "fit"
        return self._run(self._fit)

    def _fit(self) -> FitResult:
        valid = self._setup_fit()
        if self.exp.resume_path:
            self.checkpointer.load_for_resume(self.exp.resume_path)
        self.call("setup", self.stage)
        self.call("on_fit_start")
        progress = self.progress
        fresh = progress.global_step == 0 and progress.batch_idx == 0
        if fresh and valid and self.limits.sanity_steps:
            self._evaluate(Phase.VALID, valid, max_batches=self.limits.sanity_steps, log=False)
        while not self._done():
            self._train_epoch()
            if self.stop_reason is not None and not progress.epoch_done:
                break
            metrics = self._finish_epoch(valid)
            self.call("on_epoch_end", metrics)
            progress.next_epoch()
        self._guard.check(hint=NONFINITE_HINT)
        self.call("on_fit_end")
        return FitResult(self.run_dir, dict(self.logged), progress.epoch, progress.global_step)

    def _done(self) -> bool:
        lim, progress = self.limits, self.progress
        return (
            self.stop_reason is not None
            or (lim.max_epochs >= 0 and progress.epoch >= lim.max_epochs)
            or (lim.max_steps >= 0 and progress.global_step >= lim.max_steps)
            or (lim.max_seconds is not None and self.elapsed() >= lim.max_seconds)
        )

    def _train_epoch(self) -> None:
        self.task.train()
        data, progress = self.train_data, self.progress
        if progress.batch_idx == 0:
            data.set_epoch(progress.epoch)
        self.num_train_batches = batch_limit(self.limits.batches[Phase.TRAIN], len(data))
        accumulate = self.trainer.accumulate_grad_batches
        self.epoch_losses = EpochLosses()
        self.call("on_train_epoch_start")
        for batch in _take(data, self.num_train_batches - progress.batch_idx):
            last = progress.batch_idx + 1 == self.num_train_batches
            boundary = (progress.batch_idx + 1) % accumulate == 0 or last
            batch = self._to_device(data, batch)
            self.call("on_train_batch_start", batch)
            self._train_step(batch, boundary=boundary)
            progress.batch_idx += 1
            if boundary:
                progress.global_step += 1
                logs = (
                    self._log_step() if progress.global_step % self.limits.log_every == 0 else None
                )
                self._step_schedulers("step")
                self.call("on_train_batch_end", logs)
                if signum := self._preempt.agree():  # every rank stops at the same step
                    self._stop_interrupted(signum)
                if self.stop_reason is not None or self._done():
                    break
        progress.epoch_done = progress.batch_idx >= self.num_train_batches
        self.call("on_train_epoch_end")

    def _train_step(self, batch: Mapping[str, Any], *, boundary: bool) -> None:
        """One batch: forward + loss (compiled), backward; on an accumulation boundary, the
        optimizer step (unscale, clip, step, scaler update, zero_grad)."""
        accumulate = self.trainer.accumulate_grad_batches
        assert self.train_module is not None and self._wrapped is not None
        with self.strategy.gradient_sync(self._wrapped, enabled=boundary):
            with self.precision.forward_context():
                total, parts, outputs = self.train_module(batch)
            if self.trainer.on_nonfinite_loss == "skip" and not self._guard.is_finite(total):
                warnings.warn(f"skipped a batch with a non-finite loss at step "
                              f"{self.progress.global_step}", stacklevel=2)  # fmt: skip
                return
            self._guard.observe(self.progress.global_step, total, parts)
            self.precision.backward(total / accumulate if accumulate > 1 else total)
        if boundary:
            for pair in self.optimizers:
                self.precision.unscale(pair.optimizer)
            self._clip_gradients()
            for pair in self.optimizers:
                self.precision.optimizer_step(pair.optimizer)
            self.precision.update()
            for pair in self.optimizers:
                pair.optimizer.zero_grad(set_to_none=True)
        self.epoch_losses.add({"loss": total, **parts})
        self.metrics.update(Phase.TRAIN, outputs)

    def _clip_gradients(self) -> None:
        clip = self.trainer.gradient_clip_val
        if not clip:
            return
        params = [p for pair in self.optimizers for g in pair.optimizer.param_groups
                  for p in g["params"] if p.grad is not None]  # fmt: skip
        if self.trainer.gradient_clip_algorithm == "value":
            torch.nn.utils.clip_grad_value_(params, clip)
        else:
            torch.nn.utils.clip_grad_norm_(params, clip)

    def _to_device(self, data: Any, batch: Mapping[str, Any]) -> dict[str, Any]:
        """Device transfer + on-device augment/transform, then the precision's input dtype."""
        return map_tensors(self.precision.convert_input, data.to_device(batch))

    def _step_schedulers(self, interval: str, metrics: Mapping[str, float] | None = None) -> None:
        progress = self.progress
        index = progress.global_step if interval == "step" else progress.epoch + 1
        step_schedulers(
            self.optimizers, interval, index=index, metrics=dict(metrics or self.logged)
        )

    def _log_step(self) -> dict[str, float] | None:
        self._guard.check(hint=NONFINITE_HINT)
        last = self.epoch_losses.last
        return self.log({f"train/{k}_step": v.detach() for k, v in last.items()}) if last else None

    def _finish_epoch(self, valid: list[Any]) -> dict[str, float]:
        """Epoch-level logs: train means and metrics, validation when due, epoch schedulers."""
        self._guard.check(hint=NONFINITE_HINT)
        means = self.strategy.all_reduce_mean(self.epoch_losses.means("train"))
        metrics = self.log({**means, **self.metrics.on_epoch_end(Phase.TRAIN)})
        every = self.trainer.check_val_every_n_epoch or 1
        if valid and (self.progress.epoch + 1) % every == 0:
            metrics.update(self._evaluate(Phase.VALID, valid))
        self._step_schedulers("epoch", metrics)
        return metrics

    # --- evaluation -------------------------------------------------------------------------------

    def _evaluate(
        self, phase: Phase, pipelines: list[Any], *, max_batches: int | None = None,
        log: bool = True,
    ) -> dict[str, float]:  # fmt: skip
        """Run ``phase`` on every loader; metrics and (optionally) losses, logged per phase."""
        # TorchOk's rule: losses in VALID (unless compute_loss_on_valid: false), never in TEST or
        # PREDICT, whose data may not hold what the losses read (triplets train on triplets).
        with_loss = (
            self.task.losses is not None
            and phase is Phase.VALID
            and self.exp.task.compute_loss_on_valid
        )
        losses: dict[str, Tensor] = {}
        with self._eval_mode(log=log):
            for idx, data in enumerate(pipelines):
                suffix = f"_dataloader_{idx}" if len(pipelines) > 1 else ""
                sums = EpochLosses()
                for _, outputs, total, parts in self._eval_batches(phase, data, max_batches,
                                                                   with_loss):  # fmt: skip
                    if total is not None:
                        sums.add({"loss": total, **parts})
                    self.metrics.update(phase, outputs, dataloader_idx=idx)
                losses.update({f"{k}{suffix}": v for k, v in sums.means(phase.value).items()})
        results = {**self.strategy.all_reduce_mean(losses), **self.metrics.on_epoch_end(phase)}
        if not log:
            return {}
        values = self.log(results)
        self.call("on_validation_end", values)
        return values

    def _eval_batches(
        self, phase: Phase, data: Any, max_batches: int | None, with_loss: bool
    ) -> Iterator[tuple[Tensor | None, dict[str, Any], Tensor | None, dict[str, Tensor]]]:
        """``(sample indices, outputs, total loss or None, loss parts)`` per batch of one loader."""
        assert self.eval_module is not None
        data.set_epoch(0)
        limit = batch_limit(self.limits.batches[phase], len(data))
        limit = min(limit, max_batches) if max_batches is not None else limit
        for b, batch in enumerate(_take(data, limit)):
            with self.precision.forward_context():
                total, parts, outputs = self.eval_module(self._to_device(data, batch), with_loss)
            yield batch.get("index"), outputs, total, parts
            self.call("on_validation_batch_end", b, limit)
            if self.stage == "fit" and (signum := self._preempt.agree()):
                self._stop_interrupted(signum)  # in validation or the sanity check

    @contextlib.contextmanager
    def _eval_mode(self, *, log: bool) -> Iterator[None]:
        was_training = self.task.training
        self.task.eval()
        self.strategy.sync_buffers(self.task.model)
        if log:
            self.call("on_validation_start")
        try:
            with torch.inference_mode():
                yield
        finally:
            self.task.train(was_training)

    def validate(self, checkpoint: str | Path | None = None) -> dict[str, float]:
        return self._run_eval("validate", Phase.VALID, checkpoint)

    def test(self, checkpoint: str | Path | None = None) -> dict[str, float]:
        return self._run_eval("test", Phase.TEST, checkpoint)

    def _run_eval(
        self, stage: str, phase: Phase, checkpoint: str | Path | None
    ) -> dict[str, float]:
        self.stage = stage
        return self._run(lambda: self._evaluate(phase, self._setup_eval(phase, checkpoint)))

    def _setup_eval(self, phase: Phase, checkpoint: str | Path | None) -> list[Any]:
        """Weights, the evaluation module and the pipelines of ``phase``; then the callbacks'
        ``setup``."""
        stage = self.stage
        if not self.exp.data[phase]:
            raise ConfigError(f"data.{phase.name}", f"{stage} needs a {phase.name} dataset")
        load_evaluation_weights(self.task.model, self.exp, checkpoint, stage=stage)
        self.eval_module = self._compiled(TrainingModule(self.task, self.task.losses))
        pipelines = self._pipelines(phase)
        self.call("setup", stage)
        return pipelines

    # --- predict ----------------------------------------------------------------------------------

    def predict(self, checkpoint: str | Path | None = None, output: Path | None = None) -> Path:
        self.stage = "predict"
        return self._run(lambda: self._predict(checkpoint, output))

    def _predict(self, checkpoint: str | Path | None, output: Path | None) -> Path:
        pipelines = self._setup_eval(Phase.PREDICT, checkpoint)
        writer = self.task.prediction_writer(
            output or self.run_dir / "predictions.csv",
            rank=self.env.rank,
            world_size=self.env.world_size,
        )
        with_metrics: bool | None = None
        with self._eval_mode(log=True):
            for idx, data in enumerate(pipelines):
                for index, outputs, _, _ in self._eval_batches(Phase.PREDICT, data, None, False):
                    if with_metrics is None:  # PREDICT data often has no targets
                        with_metrics = self._metrics_apply(Phase.PREDICT, outputs)
                    if with_metrics:
                        self.metrics.update(Phase.PREDICT, outputs, dataloader_idx=idx)
                    writer.add(idx, index, self.task.predict_outputs(outputs))
        metrics = self.metrics.on_epoch_end(Phase.PREDICT)
        if metrics:
            self.log(metrics)
        return writer.write()

    def _metrics_apply(self, phase: Phase, outputs: Mapping[str, Any]) -> bool:
        """Whether the metrics of ``phase`` find their inputs; warn once when they do not."""
        try:
            self.metrics.check_outputs(phase, outputs.keys())
        except OkcError as err:
            warnings.warn(f"{phase.name} metrics are not computed: {err}", stacklevel=2)
            return False
        return True

    # --- running a stage, interrupts --------------------------------------------------------------

    def _run(self, body: Callable[[], Any]) -> Any:
        """``body`` (which builds the stage and calls the callbacks' ``setup``), then always the
        callbacks' ``teardown`` and the loggers' close, whatever failed and where."""
        try:
            with self._signals() if self.stage == "fit" else contextlib.nullcontext():
                result = body()
            # every rank's last collective (FSDP2's reduce-scatters are asynchronous) is done
            # before the process group goes: gloo aborts a process whose group is destroyed
            # under pending work ("terminate called without an active exception")
            self.checkpointer.close()  # an asynchronous save completes before the run ends
            self.strategy.barrier()
            return result
        except Interrupted:
            self.checkpointer.close()  # the stop's checkpoint is complete before the exit
            raise
        except BaseException as err:
            self.call("on_exception", err)
            raise
        finally:
            self.call("teardown", self.stage)
            if self.logger is not None:
                self.logger.close()
            self.strategy.teardown()

    def _signals(self) -> contextlib.AbstractContextManager[None]:
        """Ctrl-C and ``trainer.preempt_signals`` stop at the next step boundary
        (``okc.engine.preempt``); a second Ctrl-C stops at once."""
        return self._preempt.installed()

    def _stop_interrupted(self, signum: int) -> None:
        """Every rank agreed to stop: save where the run stands (through the checkpoint
        callbacks, else ``checkpoints/last.ckpt``), requeue a SLURM job, raise ``Interrupted``.

        In validation the training epoch is done but its end (validation, epoch schedulers,
        epoch checkpoints) is not: the checkpoint records the epoch as not done, so a resumed
        run reads no batch, then runs that epoch's end again.
        """
        progress = self.progress
        in_validation = progress.epoch_done
        progress.epoch_done = False
        self.last_saved = None
        with torch.inference_mode(False):  # a stop inside validation saves trainable tensors
            self.call("on_interrupt")
            if self.last_saved is None and self._saves_checkpoints():
                self.save_checkpoint(self.run_dir / "checkpoints" / "last.ckpt")
        if self.env.is_main and (line := cluster.requeue(self.trainer, signum)):
            print(line)
        where = f"; resume with resume_path={self.last_saved}" if self.last_saved else ""
        during = " (in validation)" if in_validation else ""
        raise Interrupted(
            f"interrupted by {signal_name(signum)} at epoch {progress.epoch}, step "
            f"{progress.global_step}{during}{where}",
            signum=signum,
        )

    def _saves_checkpoints(self) -> bool:
        """Whether the run may write a checkpoint of its own (fast_dev_run and
        ``enable_checkpointing: false`` save nothing)."""
        return not self.trainer.fast_dev_run and self.trainer.enable_checkpointing is not False


def _take(data: Any, n: int) -> Iterator[Any]:
    """The first ``n`` batches of ``data``."""
    if n <= 0:
        return
    for i, batch in enumerate(data):
        yield batch
        if i + 1 >= n:
            return
