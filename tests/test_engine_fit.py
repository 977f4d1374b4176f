"""The loop on real data and models: learning, checkpoints, resume, evaluation, predictions."""

from __future__ import annotations

import csv
import json
import os
import signal
from pathlib import Path

import pytest
import torch

import okc
from okc.engine.checkpoint import read_checkpoint
from okc.engine.hooks import Callback, RunView
from okc.engine.loop import Interrupted
from okc.registry import CALLBACKS


def read_jsonl(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_fit_improves_accuracy_and_writes_the_run_folder(tiny_exp) -> None:
    overrides = (
        "trainer.max_epochs=4",
        "data.TRAIN.0.dataset.params.num_samples=2048",
        "optimization.0.optimizer.params.lr=0.005",
    )
    result = okc.fit(tiny_exp(*overrides))
    records = read_jsonl(result.run_dir)
    valid = [r["valid/Accuracy"] for r in records if "valid/Accuracy" in r]
    assert len(valid) == 4
    assert valid[-1] > 0.55 and valid[-1] > valid[0] + 0.2, valid  # 4 classes: chance is 0.25
    train_loss = [r["train/loss"] for r in records if "train/loss" in r]
    assert train_loss[-1] < train_loss[0]
    assert result.epochs == 4 and result.global_step == 4 * 64
    assert (result.run_dir / "experiment.yml").is_file()
    with (result.run_dir / "metrics.csv").open() as f:
        header = next(csv.reader(f))
    assert {"epoch", "step", "train/loss", "valid/Accuracy", "train/ce_step"} <= set(header)
    assert result.last_checkpoint == result.run_dir / "checkpoints" / "last.ckpt"
    state = read_checkpoint(result.last_checkpoint)
    assert state["progress"]["epoch"] == 4 and state["progress"]["global_step"] == 4 * 64
    assert okc.Experiment.from_dict(state["experiment"]) == tiny_exp(*overrides)


def test_validate_metrics_equal_a_hand_computation(tiny_exp) -> None:
    exp = tiny_exp("trainer.max_epochs=1")
    result = okc.fit(exp)
    metrics = okc.validate(exp, checkpoint=result.last_checkpoint)
    # by hand: the same weights, the same data, plain torch
    from okc.config.schema import Phase
    from okc.data import build_pipeline
    from okc.engine.build import build_task

    task = build_task(exp)
    task.model.load_state_dict(read_checkpoint(result.last_checkpoint)["model"])
    task.eval()
    pipeline = build_pipeline(exp.data.VALID[0], phase=Phase.VALID)
    correct = total = 0
    losses = []
    with torch.no_grad():
        for batch in pipeline:
            batch = pipeline.to_device(batch)
            logits = task(batch["image"])
            correct += (logits.argmax(1) == batch["target"]).sum().item()
            total += len(logits)
            losses.append(torch.nn.functional.cross_entropy(logits, batch["target"]).item())
    assert total == 128
    assert metrics["valid/Accuracy"] == pytest.approx(correct / total, abs=1e-6)
    assert metrics["valid/loss"] == pytest.approx(sum(losses) / len(losses), rel=1e-5)


def test_checkpoint_top_k_keeps_the_best_files(tiny_exp) -> None:
    exp = tiny_exp(
        "trainer.max_epochs=4",
        "+callbacks=[{name: ModelCheckpoint, params: {monitor: valid/Accuracy, mode: max, "
        "save_top_k: 2, save_last: true, filename: '{epoch}-{valid/Accuracy:.4f}'}}]",
    )
    result = okc.fit(exp)
    files = sorted(p.name for p in (result.run_dir / "checkpoints").glob("*.ckpt"))
    assert "last.ckpt" in files and len(files) == 3, files
    records = read_jsonl(result.run_dir)
    scores = {r["epoch"]: r["valid/Accuracy"] for r in records if "valid/Accuracy" in r}
    best_two = sorted(scores, key=lambda e: (-scores[e], e))[:2]
    kept = {int(name.split("-")[0].removeprefix("epoch=")) for name in files if name != "last.ckpt"}
    assert kept == set(best_two)
    assert result.best_checkpoint.name.startswith(f"epoch={best_two[0]}-")


def test_predict_writes_one_row_per_sample(tiny_exp, tmp_path: Path) -> None:
    exp = tiny_exp(
        "+data.PREDICT=[{dataset: {name: Shapes, params: {num_samples: 50, image_size: 16, "
        "num_classes: 4, split: test, test_mode: true}, transform: [{name: Normalize, "
        "params: {mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25]}}]}, dataloader: {batch_size: 16}}]"
    )
    with pytest.warns(UserWarning, match="freshly initialized"):
        out = okc.predict(exp, output=tmp_path / "pred.csv")
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 50
    assert [int(r["index"]) for r in rows] == list(range(50))
    probs = [sum(float(r[f"probability_{i}"]) for i in range(4)) for r in rows]
    assert all(p == pytest.approx(1.0, abs=1e-4) for p in probs)
    tensors = torch.load(out.with_suffix(".pt"), weights_only=True)
    assert tensors["probability"].shape == (50, 4)
    assert tensors["prediction"].tolist() == [int(r["prediction"]) for r in rows]


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return read_checkpoint(path)["model"]


def _assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@CALLBACKS.register(name="_InterruptAt", override=True)
class InterruptAt(Callback):
    """Presses Ctrl-C (sends this process SIGINT) at a chosen optimizer step."""

    def __init__(self, *, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, run: RunView, logs) -> None:
        if run.global_step == self.step:
            os.kill(os.getpid(), signal.SIGINT)


def test_resume_after_interrupt_equals_an_uninterrupted_run(tiny_exp) -> None:
    base = ("trainer.max_epochs=3", "data.TRAIN.0.dataloader.num_workers=2")
    straight = okc.fit(tiny_exp(*base))
    with pytest.raises(Interrupted, match=r"resume with resume_path=.*last\.ckpt"):
        okc.fit(tiny_exp(*base, "+callbacks=[{name: _InterruptAt, params: {step: 11}}]"))
    interrupted = sorted((straight.run_dir.parent).glob("*/checkpoints/last.ckpt"))[-1]
    assert (
        read_checkpoint(interrupted)["progress"]["global_step"] == 11
    )  # mid-epoch: 8 steps per epoch
    resumed = okc.fit(tiny_exp(*base, f"resume_path={interrupted}"))
    assert resumed.global_step == straight.global_step == 24
    _assert_same_weights(_weights(resumed.last_checkpoint), _weights(straight.last_checkpoint))


def test_resume_from_a_step_checkpoint_after_a_crash(tiny_exp) -> None:
    """A kill -9 leaves only the checkpoints written so far; resuming from one is exact."""
    every = "+callbacks=[{name: ModelCheckpoint, params: {every_n_train_steps: 5, save_top_k: -1}}]"
    straight = okc.fit(tiny_exp("trainer.max_epochs=2", every))
    step_10 = straight.run_dir / "checkpoints" / "epoch=1-step=10.ckpt"
    assert step_10.is_file()
    resumed = okc.fit(tiny_exp("trainer.max_epochs=2", every, f"resume_path={step_10}"))
    final = resumed.run_dir / "checkpoints" / "epoch=1-step=15.ckpt"
    _assert_same_weights(
        _weights(final), _weights(straight.run_dir / "checkpoints/epoch=1-step=15.ckpt")
    )


def test_resume_without_a_configured_seed_keeps_the_run_s_own_seed(tiny_exp) -> None:
    with pytest.raises(Interrupted):
        okc.fit(tiny_exp("~seed_params", "+callbacks=[{name: _InterruptAt, params: {step: 5}}]"))
    ckpt = sorted(Path(tiny_exp().logger.log_dir).glob("tiny/*/*/checkpoints/last.ckpt"))[-1]
    seed = read_checkpoint(ckpt)["data"]["seed"]
    resumed = okc.fit(tiny_exp("~seed_params", f"resume_path={ckpt}"))
    straight = okc.fit(tiny_exp(f"seed_params.seed={seed}"))
    _assert_same_weights(_weights(resumed.last_checkpoint), _weights(straight.last_checkpoint))


def test_two_runs_with_the_same_seed_are_identical(tiny_exp) -> None:
    a = okc.fit(tiny_exp("trainer.max_epochs=1"))
    b = okc.fit(tiny_exp("trainer.max_epochs=1"))
    _assert_same_weights(_weights(a.last_checkpoint), _weights(b.last_checkpoint))


def test_resumed_run_never_deletes_the_checkpoints_it_resumed_from(tiny_exp) -> None:
    top = "+callbacks=[{name: ModelCheckpoint, params: {monitor: valid/loss, save_top_k: 1, save_last: true}}]"
    first = okc.fit(tiny_exp("trainer.max_epochs=1", top))
    kept = sorted((first.run_dir / "checkpoints").glob("*.ckpt"))
    resumed = okc.fit(tiny_exp("trainer.max_epochs=3", top, f"resume_path={first.last_checkpoint}"))
    assert resumed.run_dir != first.run_dir
    assert sorted((first.run_dir / "checkpoints").glob("*.ckpt")) == kept
    assert len(list((resumed.run_dir / "checkpoints").glob("epoch=*.ckpt"))) == 1
