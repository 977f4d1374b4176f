"""Bad input during a run: one clear error naming what was wrong and where."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from torch import nn

import okc
from okc.engine.guard import NonFiniteLossError
from okc.engine.hooks import Callback, RunView
from okc.errors import ConfigError, ConfigErrors, OkcError
from okc.registry import CALLBACKS, LOSSES


@LOSSES.register(name="_ExplodingLoss", override=True)
class ExplodingLoss(nn.Module):
    """Finite until ``at`` calls, then NaN: a loss that diverges mid-run."""

    def __init__(self, *, at: int = 3) -> None:
        super().__init__()
        self.at, self.calls = at, 0

    def forward(self, input, target):
        self.calls += 1
        scale = float("nan") if self.calls > self.at else 1.0
        return nn.functional.cross_entropy(input, target) * scale


EXPLODING = (
    "joint_loss.losses=[{name: CrossEntropyLoss, tag: ce, mapping: {input: prediction, target: target}},"
    " {name: _ExplodingLoss, tag: boom, params: {at: 3}, mapping: {input: prediction, target: target}}]"
)


def test_nonfinite_loss_names_the_step_and_the_part(tiny_exp) -> None:
    with pytest.raises(NonFiniteLossError) as err:
        okc.fit(tiny_exp(EXPLODING, "trainer.log_every_n_steps=50"))
    message = str(err.value)
    assert "not finite at step 3 from boom" in message
    assert "ce=" in message and "trainer.on_nonfinite_loss=skip" in message


def test_nonfinite_batches_can_be_skipped(tiny_exp) -> None:
    with pytest.warns(UserWarning, match="skipped a batch with a non-finite loss"):
        result = okc.fit(
            tiny_exp(EXPLODING, "trainer.on_nonfinite_loss=skip", "trainer.max_epochs=1")
        )
    assert result.metrics["train/ce"] == result.metrics["train/ce"]  # finite, not NaN


def test_mapping_to_a_key_the_task_does_not_produce(tiny_exp) -> None:
    with pytest.raises(ConfigErrors) as err:
        okc.fit(tiny_exp("joint_loss.losses.0.mapping.input=logits"))
    assert str(err.value) == (  # found by the check fit runs first
        "joint_loss.losses.0.mapping.input: ClassificationTask produces no 'logits'; "
        "it produces: embeddings, prediction, target"
    )


def test_unknown_component_in_a_run(tiny_exp) -> None:
    with pytest.raises(
        ConfigErrors,
        match=r"^callbacks\.0\.name: unknown callback 'ModelCheckpiont', did you mean 'ModelCheckpoint'\?",
    ):
        okc.fit(tiny_exp("+callbacks=[{name: ModelCheckpiont}]"))


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_log_dir_fails_before_training(tiny_exp, tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(OkcError, match="cannot write the run folder .*set logger.log_dir"):
        okc.fit(tiny_exp(f"logger.log_dir={locked}"))


def test_log_dir_that_is_a_file_fails_before_training(tiny_exp, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    with pytest.raises(OkcError, match="cannot write the run folder .*set logger.log_dir"):
        okc.fit(tiny_exp(f"logger.log_dir={blocker}"))


def test_monitor_that_is_never_logged(tiny_exp) -> None:
    with pytest.raises(
        ConfigError,
        match=r"callbacks\.0\.params\.monitor: 'valid/acc' was not logged; logged this epoch: .*valid/Accuracy",
    ):
        okc.fit(tiny_exp("+callbacks=[{name: ModelCheckpoint, params: {monitor: valid/acc}}]"))


def test_resume_path_that_does_not_exist(tiny_exp, tmp_path: Path) -> None:
    with pytest.raises(OkcError, match="resume_path: file not found: .*nope.ckpt"):
        okc.fit(tiny_exp(f"resume_path={tmp_path / 'nope.ckpt'}"))


def test_resume_path_that_is_not_a_checkpoint(tiny_exp, tmp_path: Path) -> None:
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(OkcError, match="junk.ckpt: not a readable checkpoint"):
        okc.fit(tiny_exp(f"resume_path={junk}"))


def test_gpu_requested_without_one(tiny_exp) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(ConfigError, match="trainer.accelerator: 'gpu' but no CUDA device"):
        okc.fit(tiny_exp("trainer.accelerator=gpu"))


def test_several_devices_without_torchrun(tiny_exp) -> None:
    with pytest.raises(ConfigError, match="torchrun --nproc_per_node 2"):
        okc.fit(tiny_exp("trainer.devices=2"))


@CALLBACKS.register(name="_FailsInSetup", override=True)
class FailsInSetup(Callback):
    """A callback whose setup raises: the run must still close its loggers."""

    def setup(self, run: RunView, stage: str) -> None:
        raise RuntimeError("setup broke")


def test_a_failing_callback_setup_still_closes_the_run(tiny_exp) -> None:
    with pytest.raises(RuntimeError, match="setup broke"):
        okc.fit(tiny_exp("+callbacks=[{name: _FailsInSetup}]"))
    run_dir = sorted(Path(tiny_exp().logger.log_dir).glob("tiny/*/*"))[-1]
    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["status"] == "FAILED"  # FinalizeLogger: the loggers were closed


def test_a_loss_input_missing_at_run_time_names_the_mapping(tiny_exp) -> None:
    """VALID data without targets: the loss mapping's 'target' is not produced there."""
    exp = tiny_exp("+data.VALID.0.dataset.params.test_mode=true", "trainer.max_epochs=1")
    with pytest.raises(ConfigErrors, match=r"joint_loss\.losses\.0\.mapping\.target"):
        okc.fit(exp)


def test_test_computes_metrics_but_no_loss(tiny_exp) -> None:
    """TorchOk's rule: TEST data need not hold what the losses read (triplets, say)."""
    metrics = okc.test(tiny_exp("+data.TEST=${data.VALID}"))
    assert "test/Accuracy" in metrics and not any("loss" in k for k in metrics)
