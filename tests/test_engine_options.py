"""Loop options: precision, compile, several optimizers, accumulation, limits, early stopping."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import okc


def step_losses(run_dir: Path) -> list[float]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["train/loss_step"] for r in records if "train/loss_step" in r]


def test_bf16_mixed_precision_trains(tiny_exp) -> None:
    result = okc.fit(tiny_exp("trainer.precision=bf16-mixed", "trainer.max_epochs=1"))
    losses = step_losses(result.run_dir)
    assert len(losses) == 4 and all(torch.isfinite(torch.tensor(losses)))
    assert 0.0 <= result.metrics["valid/Accuracy"] <= 1.0 and result.metrics["train/loss"] < 10


def test_fp16_mixed_precision_uses_a_loss_scaler(tiny_exp) -> None:
    from okc.engine.checkpoint import read_checkpoint

    result = okc.fit(tiny_exp("trainer.precision=16-mixed", "trainer.max_epochs=1"))
    state = read_checkpoint(result.last_checkpoint)
    assert state["precision"]["scaler"]["scale"] > 0  # the GradScaler's state is checkpointed
    assert all(torch.isfinite(torch.tensor(step_losses(result.run_dir))))


@pytest.mark.compile
def test_compiled_and_eager_steps_give_the_same_losses(tiny_exp) -> None:
    common = (
        "trainer.max_epochs=1",
        "trainer.log_every_n_steps=1",
        "~data.TRAIN.0.dataset.augment",
        "trainer.channels_last=false",  # NHWC kernels round differently compiled and eager
    )
    eager = step_losses(okc.fit(tiny_exp(*common, "trainer.compile=false")).run_dir)
    compiled = step_losses(okc.fit(tiny_exp(*common, "trainer.compile=true")).run_dir)
    assert len(eager) == len(compiled) == 8
    assert compiled == pytest.approx(eager, rel=1e-3, abs=1e-4)


def test_two_optimizers_own_their_modules_and_step_their_schedulers(tiny_exp) -> None:
    optimization = (
        "optimization=["
        "{optimizer: {name: SGD, params: {lr: 0.1}}, modules: [backbone],"
        " scheduler: {name: StepLR, params: {step_size: 1, gamma: 0.5}}},"
        "{optimizer: {name: AdamW, params: {lr: 0.01}},"
        " scheduler: {name: ExponentialLR, params: {gamma: 0.9}, pl_params: {interval: step,"
        " frequency: 2}}}]"
    )
    exp = tiny_exp("trainer.max_epochs=2", optimization)
    from okc.engine.loop import Loop

    loop = Loop(exp)
    result = loop.fit()
    sgd, adamw = (p.optimizer for p in loop.optimizers)
    backbone = {id(p) for p in loop.task.model.backbone.parameters()}
    assert {id(p) for g in sgd.param_groups for p in g["params"]} == backbone
    assert not backbone & {id(p) for g in adamw.param_groups for p in g["params"]}
    # epoch interval: two epochs halve twice; step interval every 2nd of 16 steps: 8 times
    assert sgd.param_groups[0]["lr"] == pytest.approx(0.1 * 0.5**2)
    assert adamw.param_groups[0]["lr"] == pytest.approx(0.01 * 0.9**8)
    assert result.global_step == 16


def test_gradient_accumulation_counts_optimizer_steps(tiny_exp) -> None:
    result = okc.fit(tiny_exp("trainer.max_epochs=1", "trainer.accumulate_grad_batches=3",
                              "trainer.gradient_clip_val=0.5"))  # fmt: skip
    assert result.global_step == 3  # 8 batches: steps after batches 3, 6 and the last


def test_limits_and_max_steps(tiny_exp) -> None:
    result = okc.fit(tiny_exp("trainer.max_epochs=5", "trainer.limit_train_batches=3",
                              "trainer.max_steps=7", "trainer.limit_val_batches=1"))  # fmt: skip
    assert result.global_step == 7 and result.epochs == 3


def test_fast_dev_run_runs_one_batch_and_saves_nothing(tiny_exp) -> None:
    result = okc.fit(tiny_exp("trainer.fast_dev_run=true"))
    assert result.global_step == 1
    assert result.last_checkpoint is None
    assert not (result.run_dir / "checkpoints").exists()


def test_early_stopping_stops(tiny_exp) -> None:
    exp = tiny_exp(
        "trainer.max_epochs=20",
        "optimization.0.optimizer.params.lr=0.0",  # nothing improves
        "+callbacks=[{name: EarlyStopping, params: {monitor: valid/loss, patience: 2}}]",
    )
    result = okc.fit(exp)
    assert result.epochs == 3  # best at epoch 0, no improvement in 1 and 2


def test_validation_every_n_epochs(tiny_exp) -> None:
    result = okc.fit(tiny_exp("trainer.max_epochs=4", "trainer.check_val_every_n_epoch=2"))
    records = [json.loads(x) for x in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records if "valid/Accuracy" in r] == [1, 3]


def test_learning_rate_monitor_logs_lr(tiny_exp) -> None:
    result = okc.fit(tiny_exp("trainer.max_epochs=1", "+callbacks=[{name: LearningRateMonitor}]"))
    assert result.metrics["lr-AdamW"] == pytest.approx(0.01)


def _conv_layouts(exp) -> set[bool]:
    from okc.engine.loop import Loop

    model = Loop(exp).task.model
    return {
        m.weight.is_contiguous(memory_format=torch.channels_last)
        for m in model.modules()
        if isinstance(m, torch.nn.Conv2d) and m.weight.shape[-1] > 1
    }


def test_channels_last_auto_on_a_cpu_and_off_when_asked(tiny_exp) -> None:
    assert _conv_layouts(tiny_exp()) == {True}  # auto: a convnet on a CPU
    assert _conv_layouts(tiny_exp("trainer.channels_last=true")) == {True}
    assert _conv_layouts(tiny_exp("trainer.channels_last=false")) == {False}


def test_channels_last_trains_like_nchw(tiny_exp) -> None:
    """The layout changes the kernels, not the maths: losses agree to float rounding, and the
    checkpoint's weights load into an NCHW model."""
    nhwc = okc.fit(tiny_exp("trainer.max_epochs=1", "trainer.channels_last=true"))
    nchw = okc.fit(tiny_exp("trainer.max_epochs=1", "trainer.channels_last=false"))
    a, b = step_losses(nhwc.run_dir), step_losses(nchw.run_dir)
    assert len(a) == len(b) == 4
    assert torch.allclose(torch.tensor(a), torch.tensor(b), rtol=1e-3, atol=1e-4), (a, b)
    valid = okc.validate(tiny_exp("trainer.channels_last=false"), checkpoint=nhwc.last_checkpoint)
    assert valid["valid/Accuracy"] == pytest.approx(nhwc.metrics["valid/Accuracy"])


def test_channels_last_with_fsdp_is_refused_and_auto_stays_nchw() -> None:
    from okc.engine.distributed import DistEnv
    from okc.engine.strategy import FSDPStrategy, SingleDeviceStrategy
    from okc.errors import ConfigError

    conv = torch.nn.Conv2d(3, 4, 3)
    cpu = torch.device("cpu")
    single, gpu = (
        SingleDeviceStrategy(DistEnv(cpu)),
        SingleDeviceStrategy(DistEnv(torch.device("cuda"))),
    )
    fsdp = FSDPStrategy(DistEnv(cpu, world_size=2))
    assert single.channels_last("auto", conv, half=False)
    assert not fsdp.channels_last("auto", conv, half=False)
    assert not single.channels_last("auto", torch.nn.Linear(3, 4), half=False)
    assert not gpu.channels_last("auto", conv, half=False)
    assert gpu.channels_last("auto", conv, half=True)
    from okc.engine.precision import Precision

    halves = {
        p: Precision(p, cpu).half for p in ("32", "16-mixed", "bf16-mixed", "bf16-true", "64")
    }
    assert halves == {"32": False, "16-mixed": True, "bf16-mixed": True, "bf16-true": True,
                      "64": False}  # fmt: skip
    with pytest.raises(ConfigError, match="trainer.channels_last"):
        fsdp.channels_last(True, conv, half=False)
