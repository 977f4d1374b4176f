"""``ModelCheckpoint(keep_latest_k=...)``: frequent step checkpoints stay bounded on disk."""

from __future__ import annotations

import pytest
from conftest import TINY_EXPERIMENT

import okc
from okc.callbacks.model_checkpoint import ModelCheckpoint


def test_keep_latest_k_keeps_the_newest_step_checkpoints(tiny_exp) -> None:
    callbacks = (
        "callbacks:\n  - name: ModelCheckpoint\n    params: {every_n_train_steps: 1, "
        "save_top_k: -1, save_last: true, keep_latest_k: 2, filename: '{step}'}\n"
    )
    exp = tiny_exp("trainer.max_steps=5", "trainer.limit_val_batches=0",
                   text=TINY_EXPERIMENT + callbacks)  # fmt: skip
    result = okc.fit(exp)
    folder = result.run_dir / "checkpoints"
    # save_top_k: -1 alone would keep steps 1 to 5; the bound keeps the 2 newest, and last
    assert sorted(p.name for p in folder.iterdir()) == ["last.ckpt", "step=4.ckpt", "step=5.ckpt"]


def test_keep_latest_k_must_be_positive() -> None:
    with pytest.raises(ValueError, match="keep_latest_k must be >= 1"):
        ModelCheckpoint(keep_latest_k=0)
