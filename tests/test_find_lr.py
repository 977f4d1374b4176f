"""The learning-rate range test on Shapes: a suggestion inside the sweep, the curve written, the
model left as it was, divergence stops it, and TorchOk's ``+mode=find_lr`` runs it."""

from __future__ import annotations

import csv
import math
import sys
from pathlib import Path

import pytest
import torch

import okc
from okc.callbacks.defaults import build_callbacks
from okc.callbacks.lr_finder import LRFinder, smooth, suggest, sweep_experiment
from okc.cli import main
from okc.engine.hooks import Callback
from okc.engine.loop import Loop

SWEEP = {"min_lr": 1e-4, "max_lr": 3.0, "num_steps": 40}


def test_suggestion_lies_inside_the_sweep_on_shapes(tiny_exp, tmp_path: Path) -> None:
    result = okc.find_lr(tiny_exp(), **SWEEP)
    assert result.suggestion is not None
    assert SWEEP["min_lr"] <= result.suggestion <= SWEEP["max_lr"]
    assert result.suggestion in result.lrs[10:-1]  # the rule skips the first 10 and the last
    rows = list(csv.DictReader(result.csv.open()))
    assert [float(r["lr"]) for r in rows] == pytest.approx(result.lrs, rel=1e-6)
    assert float(rows[0]["lr"]) == pytest.approx(SWEEP["min_lr"])
    # the loss falls somewhere in the sweep: at the suggestion the smoothed loss is below its start
    at = result.lrs.index(result.suggestion)
    assert result.smoothed[at] < result.smoothed[0]
    assert result.png is not None and result.png.stat().st_size > 0
    assert result.csv.parent.parent.parent.parent == tmp_path / "logs"  # the sweep's run folder


def test_the_model_and_optimizer_are_restored(tiny_exp) -> None:
    sweep = sweep_experiment(tiny_exp(), num_steps=12)
    finder = LRFinder(min_lr=1e-3, max_lr=1.0, num_steps=12)
    loop = Loop(sweep, callbacks=[*build_callbacks(sweep, "fit"), finder])
    before = {k: v.clone() for k, v in loop.task.model.state_dict().items()}
    loop.fit()
    assert len(finder.losses) == 12 and loop.progress.global_step == 12
    after = loop.task.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    (optimizer,) = loop.optimizers
    assert optimizer.optimizer.param_groups[0]["lr"] == 0.01  # the experiment's lr, not the sweep's
    assert not optimizer.optimizer.state  # no moments left from the sweep


def test_a_diverging_sweep_stops_early(tiny_exp) -> None:
    result = okc.find_lr(tiny_exp(), min_lr=1e-3, max_lr=1e6, num_steps=60)
    assert len(result.lrs) < 60
    assert "diverged" in result.stop_reason or "not finite" in result.stop_reason
    assert max(result.lrs) < 1e6


def test_param_groups_keep_their_ratio(tiny_exp) -> None:
    exp = tiny_exp("+optimization.0.optimizer.paramwise_cfg={custom_keys: {head: {lr_mult: 0.1}}}")
    sweep = sweep_experiment(exp, num_steps=3)
    finder = LRFinder(min_lr=1e-3, max_lr=1e-1, num_steps=3)
    seen: list[list[float]] = []

    class Spy(Callback):  # runs after the finder set the lr of the next step
        def on_train_batch_end(self, run, logs) -> None:
            seen.append(sorted(g["lr"] for g in run.optimizers[0].param_groups))

    Loop(sweep, callbacks=[finder, Spy()]).fit()
    assert seen[0] == pytest.approx([0.1 * finder.lr_at(1), finder.lr_at(1)])


def test_without_matplotlib_the_csv_is_written_with_a_note(
    tiny_exp, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if it were not installed
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    monkeypatch.setitem(sys.modules, "matplotlib.backends.backend_agg", None)
    result = okc.find_lr(tiny_exp(), min_lr=1e-3, max_lr=1.0, num_steps=5,
                         output=tmp_path / "sweep" / "curve")  # fmt: skip
    assert result.csv == tmp_path / "sweep" / "curve.csv" and result.csv.is_file()
    assert result.png is None and not (tmp_path / "sweep" / "curve.png").exists()
    assert "pip install 'okc[plot]'" in result.note
    assert result.suggestion is None  # 5 points are too few for the rule


def test_suggestion_rule() -> None:
    lrs = [10 ** (-5 + i * 0.25) for i in range(24)]  # 1e-5 .. ~5
    # a loss that is flat, falls fastest around lr 1e-2, then rises
    loss = [2.0 - math.tanh((math.log10(lr) + 2) * 2) + (0.5 * (lr > 1) * lr) for lr in lrs]
    assert suggest(lrs, loss) == pytest.approx(1e-2)
    assert suggest(lrs, [1.0] * 24) is None  # nothing falls
    assert suggest(lrs[:12], loss[:12]) is None  # too few points
    assert smooth([1.0, 1.0, 1.0]) == pytest.approx([1.0, 1.0, 1.0])  # bias-corrected


def test_torchok_mode_find_lr(capsys, tmp_path: Path) -> None:
    root = Path(__file__).parents[1] / "experiments"
    code = main(["-cp", str(root), "-cn", "shapes", "+mode=find_lr", f"logger.log_dir={tmp_path}",
                 "task.params.backbone_name=test_resnet", "trainer.enable_progress_bar=false",
                 "data.TRAIN.0.dataset.params.image_size=16", "--num-steps", "15",
                 "--min-lr", "1e-4", "--max-lr", "1"])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0, out
    assert "find-lr: 15 steps" in out and "loss curve:" in out
    assert "suggested learning rate" in out or "no suggestion" in out
    assert list(tmp_path.rglob("lr_find.csv"))
