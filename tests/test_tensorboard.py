"""What a run shows in TensorBoard, read back with tensorboard's own event reader: scalars with
the learning rate, the first training batch as an image grid (the batch the model receives,
de-normalized), the experiment as text and as hparams. (tests/test_tensorboard_http.py reads a
run through a running TensorBoard server.)"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import okc
from okc.callbacks.defaults import build_callbacks
from okc.callbacks.train_images import denormalize, find_normalize, image_grid
from okc.config.schema import Augmentation
from okc.data.augment import build_ops
from okc.data.ops import Chain
from okc.engine.hooks import Callback, RunView
from okc.engine.loop import Loop

FAST = ("trainer.max_steps=3", "trainer.max_epochs=1", "trainer.log_every_n_steps=1")


def read_events(folder: Path) -> Any:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0, "images": 0})
    acc.Reload()
    return acc


def png_pixels(encoded: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(encoded)).convert("RGB"))


class FirstBatch(Callback):
    """Keeps the batch the hook hands over and the input the model's forward actually gets."""

    def __init__(self) -> None:
        self.batch: dict[str, torch.Tensor] | None = None
        self.model_input: torch.Tensor | None = None

    def setup(self, run: RunView, stage: str) -> None:
        def keep(module: torch.nn.Module, args: tuple) -> None:
            if self.model_input is None:
                self.model_input = args[0].detach().clone()

        run.model.backbone.register_forward_pre_hook(keep)  # the model's first module

    def on_train_batch_start(self, run: RunView, batch) -> None:
        if self.batch is None:
            self.batch = {k: v.clone() for k, v in batch.items() if isinstance(v, torch.Tensor)}


def test_the_grid_is_the_batch_the_model_receives(tiny_exp) -> None:
    exp = tiny_exp(*FAST)
    first = FirstBatch()
    loop = Loop(exp, callbacks=[*build_callbacks(exp, "fit"), first])
    loop.fit()
    assert first.batch is not None and first.model_input is not None
    torch.testing.assert_close(first.batch["image"], first.model_input)  # the hook's batch
    acc = read_events(loop.run_dir / "tensorboard")
    (event,) = acc.Images("train/batch/image")
    assert event.step == 0  # the first step's batch
    train = exp.data.TRAIN[0].dataset
    normalize = find_normalize([*train.augment, *train.transform])
    assert normalize["mean"] == [0.5, 0.5, 0.5] and normalize["max_pixel_value"] == 255.0
    expected = image_grid(first.batch["image"][:16], normalize)
    shown = png_pixels(event.encoded_image_string)
    assert shown.shape == (expected.shape[1], expected.shape[2], 3)  # 4x4 tiles of 16 px
    want = (expected.permute(1, 2, 0).numpy() * 255).round()
    assert np.abs(shown.astype(float) - want).max() <= 1  # PNG rounding only
    # de-normalized, the Shapes pictures are back in [0, 1] (no clamping needed), from [-2, 2]
    back = denormalize(first.batch["image"], normalize)
    assert first.batch["image"].min() < -1 and back.min() >= -1e-5 and back.max() <= 1 + 1e-5


@pytest.mark.parametrize("max_pixel_value", [255.0, 1.0])
def test_denormalize_undoes_okc_normalize(max_pixel_value: float) -> None:
    params = {"mean": [0.4, 0.5, 0.6], "std": [0.2, 0.25, 0.3],
              "max_pixel_value": max_pixel_value}  # fmt: skip
    normalize = Chain(build_ops([{"name": "Normalize", "params": params}]))
    x = torch.rand(2, 3, 8, 8)
    y, _ = normalize(x, [])
    found = find_normalize(
        [Augmentation("Resize", {"height": 8}), Augmentation("Normalize", params)]
    )
    torch.testing.assert_close(denormalize(y, found), x)


def test_normalize_defaults_and_the_cases_it_cannot_undo() -> None:
    (only,) = [Augmentation("Normalize")]
    assert find_normalize([only])["std"] == (0.229, 0.224, 0.225)  # albumentations' defaults
    assert find_normalize([]) == {}  # nothing to undo: shown as is
    twice = [Augmentation("Normalize"), Augmentation("Normalize")]
    inside = [Augmentation("OneOf", {"transforms": [{"name": "Normalize"}]})]
    assert find_normalize(twice) is None and find_normalize(inside) is None
    x = torch.linspace(-3, 5, 2 * 3 * 4 * 4).reshape(2, 3, 4, 4)
    grid = image_grid(x, None)  # stretched per image
    assert grid.min() == 0 and grid.max() == 1


def test_hparams_and_text_describe_the_run(tiny_exp, tmp_path: Path) -> None:
    from tensorboard.plugins.hparams import plugin_data_pb2

    result = okc.fit(tiny_exp(*FAST, "logger.name=TensorBoardLogger"))
    acc = read_events(result.run_dir / "tensorboard")
    assert [e.value for e in acc.Scalars("lr-AdamW")] == pytest.approx([0.01] * 3)
    data = {
        tag: plugin_data_pb2.HParamsPluginData.FromString(content)
        for tag, content in acc.PluginTagToContent("hparams").items()
    }
    start = data["_hparams_/session_start_info"].session_start_info.hparams
    assert start["optimization.0.optimizer.params.lr"].number_value == pytest.approx(0.01)
    assert start["task.params.backbone_name"].string_value == "test_resnet"
    assert start["seed_params.seed"].number_value == 0
    end = data["_hparams_/session_end_info"].session_end_info
    assert end.status == 1  # STATUS_SUCCESS: the run FINISHED
    records = [json.loads(x) for x in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["status"] == "FINISHED"


def test_a_failed_run_ends_its_hparams_session_as_failed(tiny_exp) -> None:
    from tensorboard.plugins.hparams import plugin_data_pb2

    class Boom(Callback):
        def on_train_batch_end(self, run: RunView, logs) -> None:
            raise RuntimeError("boom")

    exp = tiny_exp(*FAST, "logger.name=TensorBoardLogger")
    loop = Loop(exp, callbacks=[*build_callbacks(exp, "fit"), Boom()])
    with pytest.raises(RuntimeError, match="boom"):
        loop.fit()
    acc = read_events(loop.run_dir / "tensorboard")
    content = acc.PluginTagToContent("hparams")["_hparams_/session_end_info"]
    end = plugin_data_pb2.HParamsPluginData.FromString(content)
    assert end.session_end_info.status == 2  # STATUS_FAILURE
