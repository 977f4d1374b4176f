"""The checkpointer: named Stateful parts saved and restored by name; old files still load."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

import okc
from okc.callbacks.defaults import build_callbacks
from okc.engine.checkpoint import Checkpointer, read_checkpoint, write_atomic
from okc.engine.loop import Loop
from okc.errors import OkcError


class Counter:
    """A Stateful part a user might add: nothing in the Loop knows about it."""

    def __init__(self, value: int = 0) -> None:
        self.value = torch.tensor(value)

    def state_dict(self) -> dict[str, Any]:
        return {"value": self.value.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.value = state["value"].clone()


def test_parts_are_saved_and_restored_by_name(tmp_path: Path) -> None:
    a, b = Counter(3), Counter(5)
    saver = Checkpointer(meta={"experiment": {"name": "x"}})
    saver.add("model", Counter(1), weights=True)
    saver.add("a", a)
    saver.add("b", b)
    path = saver.save(tmp_path / "c.ckpt")
    assert read_checkpoint(path)["experiment"] == {"name": "x"}
    fresh_a, fresh_b = Counter(), Counter()
    loader = Checkpointer()
    loader.add("model", Counter(), weights=True)
    loader.add("b", fresh_b)  # order does not matter: parts are found by name
    loader.add("a", fresh_a)
    loader.load_for_resume(path)
    assert (fresh_a.value.item(), fresh_b.value.item()) == (3, 5)


def test_a_part_the_file_lacks_is_named(tmp_path: Path) -> None:
    saver = Checkpointer()
    saver.add("model", Counter(), weights=True)
    path = saver.save(tmp_path / "c.ckpt")
    loader = Checkpointer()
    loader.add("model", Counter(), weights=True)
    loader.add("scaler", Counter())
    with pytest.raises(OkcError, match="has no scaler"):
        loader.load_for_resume(path)
    weights = saver.save(tmp_path / "w.ckpt", weights_only=True)
    with pytest.raises(OkcError, match="weights-only checkpoint .* cannot resume"):
        loader.load_for_resume(weights)


def test_a_new_part_goes_through_fit_and_resume_without_loop_changes(tiny_exp) -> None:
    exp = tiny_exp("trainer.max_epochs=1")
    loop = Loop(exp, callbacks=build_callbacks(exp, "fit"))
    loop.checkpointer.add("counter", Counter(42))
    loop.fit()
    last = loop.run_dir / "checkpoints" / "last.ckpt"
    assert read_checkpoint(last)["counter"]["value"].item() == 42
    resumed_exp = tiny_exp("trainer.max_epochs=2", f"resume_path={last}")
    resumed = Loop(resumed_exp, callbacks=build_callbacks(resumed_exp, "fit"))
    counter = Counter(0)
    resumed.checkpointer.add("counter", counter)
    resumed.fit()
    assert counter.value.item() == 42


def _as_format_1(state: dict[str, Any]) -> dict[str, Any]:
    """The flat layout okc 0.1 wrote (what a user's old checkpoint holds)."""
    progress, data = state["progress"], state["data"]
    return {
        "okc_version": "0.1.0", "format": 1, "model": state["model"],
        "experiment": state["experiment"], "epoch": progress["epoch"],
        "global_step": progress["global_step"], "batch_idx": progress["batch_idx"],
        "data": data["position"], "seed": data["seed"],
        "optimizers": state["optimization"]["optimizers"],
        "schedulers": state["optimization"]["schedulers"], "precision": state["precision"],
        "rng": state["rng"], "callbacks": list(state["callbacks"].values()),
    }  # fmt: skip


def test_a_format_1_checkpoint_resumes_like_the_current_one(tiny_exp, tmp_path: Path) -> None:
    every = "+callbacks=[{name: ModelCheckpoint, params: {every_n_train_steps: 5, save_top_k: -1}}]"
    first = okc.fit(tiny_exp("trainer.max_epochs=1", every))
    step_5 = first.run_dir / "checkpoints" / "epoch=0-step=5.ckpt"  # mid-epoch (8 steps)
    old = tmp_path / "old.ckpt"
    write_atomic(_as_format_1(read_checkpoint(step_5)), old)
    assert read_checkpoint(old)["progress"]["batch_idx"] == 5
    from_new = okc.fit(tiny_exp("trainer.max_epochs=2", f"resume_path={step_5}"))
    from_old = okc.fit(tiny_exp("trainer.max_epochs=2", f"resume_path={old}"))
    a, b = (read_checkpoint(r.last_checkpoint)["model"] for r in (from_new, from_old))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_checkpoint_from_a_newer_okc_says_so(tmp_path: Path) -> None:
    write_atomic({"format": 99, "okc_version": "9.0", "model": {}}, tmp_path / "new.ckpt")
    with pytest.raises(OkcError, match="format 99 was written by a newer okc"):
        read_checkpoint(tmp_path / "new.ckpt")
