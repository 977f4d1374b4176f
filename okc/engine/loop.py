"""The loop: fit, validate, test and predict, written to be read top to bottom.

    loop = Loop(experiment, stage="fit")
    result = loop.fit()

``fit`` is: restore (``resume_path``) → sanity validation → for each epoch: train batches (the
compiled forward + loss, eager backward and optimizer step), then validation when due, epoch
schedulers, callbacks (checkpoints, early stopping) → close. Host syncs happen only on logging
steps, at epoch ends and when saving; each is marked ``# sync point``.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import attrs
import torch
from torch import Tensor

from okc.check import import_user_modules
from okc.config.schema import Experiment, Phase
from okc.engine import distributed
from okc.engine.build import batch_limit, build_callbacks, build_task, limits, warn_unsupported
from okc.engine.checkpoint import (
    load_checkpoint_file,
    load_model_weights,
    load_state_into,
    restore_rng_state,
    rng_state,
)
from okc.engine.checkpoint import save_checkpoint as write_checkpoint
from okc.engine.guard import NonFiniteGuard
from okc.engine.precision import Precision
from okc.engine.seed import choose_seed, seed_everything
from okc.engine.step import TrainingModule, maybe_compile
from okc.errors import ConfigError, OkcError
from okc.loggers import build_run_logger, make_run_dir
from okc.tree import map_tensors

NONFINITE_HINT = (
    "Lower the learning rate, check the inputs and targets, or set "
    "trainer.on_nonfinite_loss=skip to skip such batches."
)


class Interrupted(OkcError):
    """Ctrl-C or SIGTERM stopped ``fit`` at a step boundary (state saved by the callbacks)."""


@attrs.frozen
class FitResult:
    run_dir: Path
    metrics: dict[str, float]
    epochs: int
    global_step: int
    best_checkpoint: Path | None
    last_checkpoint: Path | None


class Loop:
    """Owns the run's objects and position (``epoch``, ``global_step``, ``batch_idx``)."""

    def __init__(self, exp: Experiment, *, stage: str = "fit") -> None:
        self.exp, self.stage, self.trainer = exp, stage, exp.trainer
        warn_unsupported(exp.trainer)
        import_user_modules(exp)
        self.env = distributed.setup(exp.trainer)
        self.device = self.env.device
        # every rank must shuffle with the same seed, or the data shards overlap
        self.seed = seed_everything(distributed.broadcast_object(choose_seed(exp.seed)))
        self.limits = limits(exp.trainer)
        self.precision = Precision(exp.trainer.precision, self.device)
        self.task = build_task(exp)
        self.task.losses = self._build_losses()
        self.metrics = self._build_metrics()
        self.task.to(self.device)
        self.precision.convert_module(self.task)
        self.run_dir = self._make_run_dir()
        self.logger = build_run_logger(exp, self.run_dir) if self.env.is_main else None
        self.callbacks = build_callbacks(exp, stage)
        self.optimizers: list[Any] = []
        self.epoch = self.global_step = self.batch_idx = 0
        self.epoch_done = False
        self.should_stop = False
        self.logged: dict[str, float] = {}  # latest value of every logged key
        self.train_data: Any = None
        self.num_train_batches = 0
        self.interrupt_checkpoint: Path | None = None  # set by a callback that saved on Ctrl-C
        self._interrupt = threading.Event()
        self._guard = NonFiniteGuard(self.device)
        self._start = time.monotonic()

    # --- setup ------------------------------------------------------------------------------------

    def _build_losses(self) -> Any:
        if self.exp.joint_loss is None:
            return None
        from okc.losses import build_joint_loss

        joint = build_joint_loss(self.exp.joint_loss)
        if self.task.output_keys:
            joint.check_outputs(self.task.output_keys)
        return joint

    def _build_metrics(self) -> Any:
        from okc.metrics import MetricsManager

        manager = MetricsManager(self.exp.metrics).to(self.device)
        if self.task.output_keys:
            for phase in Phase:
                manager.check_outputs(phase, self.task.output_keys)
        return manager

    def _make_run_dir(self) -> Path:
        run_dir = make_run_dir(self.exp) if self.env.is_main else None
        return Path(distributed.broadcast_object(str(run_dir) if run_dir else None))

    def _pipelines(self, phase: Phase) -> list[Any]:
        from okc.data import build_pipeline

        return [
            build_pipeline(
                item, phase=phase, path=f"data.{phase.name}.{i}", seed=self.seed,
                rank=self.env.rank, world_size=self.env.world_size, device=self.device,
            )
            for i, item in enumerate(self.exp.data[phase])
        ]  # fmt: skip

    def _training_module(self) -> torch.nn.Module:
        """Data parallelism first, then compile (torch.compile(DDP(m)) is DDP's supported way)."""
        module = TrainingModule(self.task, self.task.losses)
        module = distributed.wrap(
            module, self.env, strategy=self.trainer.strategy,
            sync_batchnorm=self.trainer.sync_batchnorm,
        )  # fmt: skip
        return maybe_compile(module, setting=self.trainer.compile, device=self.device)

    def _eval_module(self) -> torch.nn.Module:
        module = TrainingModule(self.task, self.task.losses)
        return maybe_compile(module, setting=self.trainer.compile, device=self.device)

    # --- hooks, logging ---------------------------------------------------------------------------

    def call(self, hook: str, *args: Any) -> None:
        for cb in self.callbacks:
            if self.env.is_main or not cb.main_process_only:
                getattr(cb, hook)(self, *args)

    def log(self, metrics: Mapping[str, float | Tensor]) -> dict[str, float]:
        """Record values under the current step (tensors are read here: a sync point)."""
        values = {k: float(v) for k, v in metrics.items()}  # sync point
        self.logged.update(values)
        if self.logger is not None:
            self.logger.log(values, step=self.global_step, epoch=self.epoch)
        return values

    # --- checkpoints ------------------------------------------------------------------------------

    def state_dict(self, *, weights_only: bool = False) -> dict[str, Any]:
        """The checkpoint of the run as it stands (see ``okc.engine.checkpoint``)."""
        self._guard.check(hint=NONFINITE_HINT)  # never save weights a NaN already reached
        state: dict[str, Any] = {
            "model": distributed.full_state_dict(self.task.model),
            "experiment": self.exp.to_dict(),
            "epoch": self.epoch,
            "global_step": self.global_step,
        }
        if weights_only:
            return state
        mid_epoch = not self.epoch_done and self.batch_idx > 0
        state.update(
            epoch=self.epoch if not self.epoch_done else self.epoch + 1,
            batch_idx=self.batch_idx if mid_epoch else 0,
            data=self.train_data.state_dict() if mid_epoch and self.train_data else None,
            optimizers=[
                distributed.full_optimizer_state(self.task.model, p.optimizer)
                for p in self.optimizers
            ],
            schedulers=[p.scheduler.state_dict() if p.scheduler else None for p in self.optimizers],
            precision=self.precision.state_dict(),
            rng=rng_state(),
            seed=self.seed,
            callbacks=[cb.state_dict() for cb in self.callbacks],
        )
        return state

    def save_checkpoint(self, path: str | Path, *, weights_only: bool = False) -> Path:
        """Write the checkpoint atomically (main process only; others return the path)."""
        state = self.state_dict(weights_only=weights_only)
        if self.env.is_main:
            write_checkpoint(state, path)
        distributed.barrier()
        return Path(path)

    def _restore(self, path: str | Path, state: dict[str, Any]) -> None:
        """Continue exactly where the checkpoint ``state`` (read from ``path``) stopped."""
        load_state_into(
            self.task.model, state, source=str(path), load=distributed.load_full_state_dict
        )
        if len(state["optimizers"]) != len(self.optimizers):
            raise OkcError(
                f"{path}: saved with {len(state['optimizers'])} optimizers, "
                f"the experiment has {len(self.optimizers)}"
            )
        for pair, opt, sch in zip(
            self.optimizers, state["optimizers"], state["schedulers"], strict=True
        ):
            distributed.load_full_optimizer_state(self.task.model, pair.optimizer, opt)
            if pair.scheduler is not None and sch is not None:
                pair.scheduler.load_state_dict(sch)
        self.precision.load_state_dict(state["precision"])
        for cb, cb_state in zip(self.callbacks, state["callbacks"], strict=False):
            cb.load_state_dict(cb_state)
        self.epoch, self.global_step = state["epoch"], state["global_step"]
        self.batch_idx = state["batch_idx"]
        if state.get("data") is not None:
            self.train_data.load_state_dict(state["data"])
        restore_rng_state(state["rng"])

    def load_weights(self, checkpoint: str | Path | None) -> None:
        load_model_weights(self.task.model, self.exp, checkpoint, stage=self.stage)

    def _apply_load_checkpoint(self) -> None:
        from okc.engine.weights import load_checkpoint

        load_checkpoint(self.task.model, self.exp.task.load_checkpoint)

    # --- fit --------------------------------------------------------------------------------------

    def fit(self) -> FitResult:
        train_items = self.exp.data.TRAIN
        if len(train_items) != 1:
            raise ConfigError("data.TRAIN", f"fit trains on one dataset, found {len(train_items)}")
        if self.task.losses is None:
            raise ConfigError("joint_loss", "fit needs a joint_loss section with at least one loss")
        if not self.exp.optimization:
            raise ConfigError("optimization", "fit needs at least one optimizer")
        from okc.optim import build_optimization

        resume = None
        if self.exp.resume_path:
            resume = load_checkpoint_file(self.exp.resume_path, what="resume_path")
            if "seed" not in resume:
                raise OkcError(f"{self.exp.resume_path}: a weights-only checkpoint cannot resume")
            self.seed = resume["seed"]  # the data order of the run being resumed
        elif self.exp.task.load_checkpoint is not None:
            self._apply_load_checkpoint()  # before sharding: it reads whole tensors
        (self.train_data,) = self._pipelines(Phase.TRAIN)
        valid = self._pipelines(Phase.VALID)
        # Wrap first: FSDP2 replaces parameters, so optimizers are built on what it leaves.
        self.train_module = self._training_module()
        self.eval_module = self._eval_module()
        self.optimizers = build_optimization(self.exp.optimization, self.task.model)
        if resume is not None:
            self._restore(self.exp.resume_path, resume)
        return self._run("fit", lambda: self._fit(valid))

    def _run(self, stage: str, body: Any) -> Any:
        self.call("setup", stage)
        try:
            with self._signals() if stage == "fit" else contextlib.nullcontext():
                return body()
        except Interrupted:
            raise
        except BaseException as err:
            self.call("on_exception", err)
            raise
        finally:
            self.call("teardown", stage)
            if self.logger is not None:
                self.logger.close()
            distributed.teardown()

    def _fit(self, valid: list[Any]) -> FitResult:
        self.call("on_fit_start")
        if self.global_step == 0 and self.batch_idx == 0 and valid and self.limits.sanity_steps:
            self._evaluate(Phase.VALID, valid, max_batches=self.limits.sanity_steps, log=False)
        while not self._done():
            self._train_epoch()
            if self.should_stop and not self.epoch_done:
                break
            metrics = self._finish_epoch(valid)
            self.call("on_epoch_end", metrics)
            self.epoch += 1
            self.batch_idx = 0
            self.epoch_done = False
        self._guard.check(hint=NONFINITE_HINT)
        self.call("on_fit_end")
        return self._result()

    def _done(self) -> bool:
        lim = self.limits
        return (
            self.should_stop
            or (lim.max_epochs >= 0 and self.epoch >= lim.max_epochs)
            or (lim.max_steps >= 0 and self.global_step >= lim.max_steps)
            or (lim.max_seconds is not None and self.elapsed() >= lim.max_seconds)
        )

    def _train_epoch(self) -> None:
        self.task.train()
        data = self.train_data
        if self.batch_idx == 0:
            data.set_epoch(self.epoch)
        self.num_train_batches = batch_limit(self.limits.batches[Phase.TRAIN], len(data))
        accumulate = self.trainer.accumulate_grad_batches
        self._sums: dict[str, Tensor] = {}
        self._count = 0
        self._last: Mapping[str, Tensor] = {}
        self.call("on_train_epoch_start")
        for batch in self._take(data, self.num_train_batches - self.batch_idx):
            last = self.batch_idx + 1 == self.num_train_batches
            boundary = (self.batch_idx + 1) % accumulate == 0 or last
            self._train_batch(self._to_device(data, batch), boundary=boundary)
            self.batch_idx += 1
            if boundary:
                self.global_step += 1
                logs = self._log_step() if self.global_step % self.limits.log_every == 0 else None
                self._step_schedulers("step")
                self.call("on_train_batch_end", logs)
                if self._interrupt.is_set():
                    self._stop_interrupted()
                if self.should_stop or self._done():
                    break
        self.epoch_done = self.batch_idx >= self.num_train_batches
        self.call("on_train_epoch_end")

    def _to_device(self, data: Any, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Device transfer + on-device augment/transform, then the precision's input dtype."""
        return map_tensors(self.precision.convert_input, data.to_device(batch))

    def _take(self, data: Any, n: int) -> Iterator[Any]:
        if n <= 0:
            return
        for i, batch in enumerate(data):
            yield batch
            if i + 1 >= n:
                return

    def _train_batch(self, batch: Mapping[str, Tensor], *, boundary: bool) -> None:
        skip = self.trainer.on_nonfinite_loss == "skip"
        sync = contextlib.nullcontext()
        if not boundary and hasattr(self.train_module, "no_sync"):
            sync = self.train_module.no_sync()  # DDP: reduce gradients once per optimizer step
        with sync:
            with self.precision.forward_context():
                total, parts, outputs = self.train_module(batch)
            if skip and not self._guard.is_finite(total):
                warnings.warn(f"skipped a batch with a non-finite loss at step {self.global_step}",
                              stacklevel=2)  # fmt: skip
                return
            self._guard.observe(self.global_step, total, parts)
            accumulate = self.trainer.accumulate_grad_batches
            self.precision.backward(total / accumulate if accumulate > 1 else total)
        if boundary:
            self._optimizer_step()
        self._accumulate({"loss": total, **parts})
        self.metrics.update(Phase.TRAIN, outputs)

    def _accumulate(self, values: Mapping[str, Tensor]) -> None:
        for key, value in values.items():
            v = value.detach().float()
            self._sums[key] = self._sums[key] + v if key in self._sums else v
        self._count += 1
        self._last = values

    def _optimizer_step(self) -> None:
        for pair in self.optimizers:
            self.precision.unscale(pair.optimizer)
        clip = self.trainer.gradient_clip_val
        if clip:
            params = [p for pair in self.optimizers for g in pair.optimizer.param_groups
                      for p in g["params"] if p.grad is not None]  # fmt: skip
            if self.trainer.gradient_clip_algorithm == "value":
                torch.nn.utils.clip_grad_value_(params, clip)
            else:
                torch.nn.utils.clip_grad_norm_(params, clip)
        for pair in self.optimizers:
            self.precision.optimizer_step(pair.optimizer)
        self.precision.update()
        for pair in self.optimizers:
            pair.optimizer.zero_grad(set_to_none=True)

    def _step_schedulers(self, interval: str, metrics: Mapping[str, float] | None = None) -> None:
        from okc.optim import step_schedulers

        index = self.global_step if interval == "step" else self.epoch + 1
        logged = dict(metrics or self.logged)
        step_schedulers(self.optimizers, interval, index=index, metrics=logged)

    def _log_step(self) -> dict[str, float] | None:
        self._guard.check(hint=NONFINITE_HINT)
        if not self._last:
            return None
        values = {f"train/{k}_step": v.detach() for k, v in self._last.items()}
        return self.log(values)

    def _finish_epoch(self, valid: list[Any]) -> dict[str, float]:
        """Epoch-level logs: train means and metrics, validation when due, epoch schedulers."""
        self._guard.check(hint=NONFINITE_HINT)
        means = {f"train/{k}": v / max(self._count, 1) for k, v in self._sums.items()}
        metrics = self.log({**distributed.all_reduce_mean(means),
                            **self.metrics.on_epoch_end(Phase.TRAIN)})  # fmt: skip
        every = self.trainer.check_val_every_n_epoch or 1
        if valid and (self.epoch + 1) % every == 0:
            metrics.update(self._evaluate(Phase.VALID, valid))
        self._step_schedulers("epoch", metrics)
        return metrics

    # --- evaluation -------------------------------------------------------------------------------

    def _evaluate(
        self, phase: Phase, pipelines: list[Any], *, max_batches: int | None = None,
        log: bool = True,
    ) -> dict[str, float]:  # fmt: skip
        """Run ``phase`` on every loader; metrics and (optionally) losses, logged per phase."""
        module = getattr(self, "eval_module", None)
        if module is None:
            module = self._eval_module()
        with_loss = self.task.losses is not None and (
            phase is not Phase.VALID or self.exp.task.compute_loss_on_valid
        )
        was_training = self.task.training
        self.task.eval()
        distributed.sync_buffers(self.task.model)
        if log:
            self.call("on_validation_start")
        losses: dict[str, Tensor] = {}
        with torch.inference_mode():
            for idx, data in enumerate(pipelines):
                suffix = f"_dataloader_{idx}" if len(pipelines) > 1 else ""
                data.set_epoch(0)
                limit = batch_limit(self.limits.batches[phase], len(data))
                limit = min(limit, max_batches) if max_batches is not None else limit
                sums: dict[str, Tensor] = {}
                for b, batch in enumerate(self._take(data, limit)):
                    with self.precision.forward_context():
                        total, parts, outputs = module(self._to_device(data, batch), with_loss)
                    if total is not None:
                        for key, value in {"loss": total, **parts}.items():
                            sums[key] = sums[key] + value.float() if key in sums else value.float()
                    self.metrics.update(phase, outputs, dataloader_idx=idx)
                    if log:
                        self.call("on_validation_batch_end", b, limit)
                losses.update({f"{phase.value}/{k}{suffix}": v / limit for k, v in sums.items()})
        results = {**distributed.all_reduce_mean(losses), **self.metrics.on_epoch_end(phase)}
        self.task.train(was_training)
        if not log:
            return {}
        values = self.log(results)
        self.call("on_validation_end", values)
        return values

    def validate(self, checkpoint: str | Path | None = None) -> dict[str, float]:
        return self._run_eval(Phase.VALID, checkpoint)

    def test(self, checkpoint: str | Path | None = None) -> dict[str, float]:
        return self._run_eval(Phase.TEST, checkpoint)

    def _run_eval(self, phase: Phase, checkpoint: str | Path | None) -> dict[str, float]:
        if not self.exp.data[phase]:
            raise ConfigError(f"data.{phase.name}", f"{self.stage} needs a {phase.name} dataset")
        self.load_weights(checkpoint)
        pipelines = self._pipelines(phase)
        return self._run(self.stage, lambda: self._evaluate(phase, pipelines))

    # --- predict ----------------------------------------------------------------------------------

    def predict(self, checkpoint: str | Path | None = None, output: Path | None = None) -> Path:
        if not self.exp.data.PREDICT:
            raise ConfigError("data.PREDICT", "predict needs a PREDICT dataset")
        self.load_weights(checkpoint)
        pipelines = self._pipelines(Phase.PREDICT)
        writer = self.task.prediction_writer(
            output or self.run_dir / "predictions.csv",
            rank=self.env.rank,
            world_size=self.env.world_size,
        )
        return self._run("predict", lambda: self._predict(pipelines, writer))

    def _predict(self, pipelines: list[Any], writer: Any) -> Path:
        module = self._eval_module()
        with_metrics: bool | None = None
        self.task.eval()
        with torch.inference_mode():
            for idx, data in enumerate(pipelines):
                data.set_epoch(0)
                limit = batch_limit(self.limits.batches[Phase.PREDICT], len(data))
                for b, batch in enumerate(self._take(data, limit)):
                    batch = self._to_device(data, batch)
                    with self.precision.forward_context():
                        _, _, outputs = module(batch, False)
                    if with_metrics is None:  # PREDICT data often has no targets
                        with_metrics = self._metrics_apply(Phase.PREDICT, outputs)
                    if with_metrics:
                        self.metrics.update(Phase.PREDICT, outputs, dataloader_idx=idx)
                    writer.add(idx, batch.get("index"), self.task.predict_outputs(outputs))
                    self.call("on_validation_batch_end", b, limit)
        metrics = self.metrics.on_epoch_end(Phase.PREDICT)
        if metrics:
            self.log(metrics)
        return writer.write()

    def _metrics_apply(self, phase: Phase, outputs: Mapping[str, Tensor]) -> bool:
        """Whether the metrics of ``phase`` find their inputs; warn once when they do not."""
        try:
            self.metrics.check_outputs(phase, outputs.keys())
        except OkcError as err:
            warnings.warn(f"{phase.name} metrics are not computed: {err}", stacklevel=2)
            return False
        return True

    # --- interrupts -------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _signals(self) -> Iterator[None]:
        """Ctrl-C / SIGTERM stop at the next step boundary; a second Ctrl-C stops at once."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum: int, frame: Any) -> None:
            if self._interrupt.is_set():
                raise KeyboardInterrupt
            self._interrupt.set()

        previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, h in previous.items():
                signal.signal(s, h)

    def _stop_interrupted(self) -> None:
        self.call("on_interrupt")
        saved = self.interrupt_checkpoint
        where = f"; resume with resume_path={saved}" if saved else ""
        raise Interrupted(f"interrupted at epoch {self.epoch}, step {self.global_step}{where}")

    def request_interrupt(self) -> None:
        """What Ctrl-C does, for callers that run the loop in a thread or a test."""
        self._interrupt.set()

    # --- results ----------------------------------------------------------------------------------

    def _result(self) -> FitResult:
        from okc.callbacks import ModelCheckpoint

        ckpt = next((c for c in self.callbacks if isinstance(c, ModelCheckpoint)), None)
        return FitResult(
            run_dir=self.run_dir,
            metrics=dict(self.logged),
            epochs=self.epoch,
            global_step=self.global_step,
            best_checkpoint=ckpt.best_model_path if ckpt else None,
            last_checkpoint=ckpt.last_model_path if ckpt else None,
        )

    def elapsed(self) -> float:
        """Seconds since the loop was built."""
        return time.monotonic() - self._start
