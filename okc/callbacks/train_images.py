"""``TrainImageGrid``: TensorBoard's picture of what the model is trained on.

At the first training step of a run it writes a grid of the batch as the model receives it: on
the device, after ``augment`` and ``transform``. That batch is normalized, which looks like noise
on screen, so the grid undoes, for display only, the TRAIN dataset's ``Normalize`` (in
``transform``, where it belongs, or in ``augment``: its ``mean``, ``std`` and
``max_pixel_value``, albumentations' defaults for those not given). Without a ``Normalize`` the
images are shown as they are (okc's images are in [0, 1] before it); with more than one, or one
inside a container, none is undone and each image is stretched to [0, 1], so the grid still shows
the augmentation. 3-channel images are shown in colour, others by their first channel. Each image
key gets its own grid (``train/batch/image``; triplets: ``train/batch/anchor``, ...).

okc adds it to every ``fit`` when TensorBoard is installed; list it under ``callbacks`` to set
``num_images``.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from okc.config.schema import Experiment
from okc.engine.hooks import Callback, RunView
from okc.errors import ParamError
from okc.loggers.tensorboard import tensorboard_dir, write_images
from okc.registry import AUGMENTATIONS, CALLBACKS, DATASETS


@CALLBACKS.register
class TrainImageGrid(Callback):
    """A grid of the first training batch (augmented, de-normalized) in TensorBoard."""

    main_process_only = True

    def __init__(self, *, num_images: int = 16) -> None:
        if num_images < 1:
            raise ParamError("num_images", f"must be >= 1, got {num_images}")
        self.num_images = num_images
        self._pending = False
        self._exp: Experiment | None = None

    def setup(self, run: RunView, stage: str) -> None:
        self._pending = stage == "fit"
        self._exp = _saved_experiment(run) if self._pending else None

    def on_train_batch_start(self, run: RunView, batch: Mapping[str, Any]) -> None:
        if not self._pending or self._exp is None:
            return
        self._pending = False
        train = self._exp.data.TRAIN[0]
        normalize = find_normalize([*train.dataset.augment, *train.dataset.transform])
        grids = {
            f"train/batch/{key}": image_grid(batch[key][: self.num_images], normalize)
            for key in _image_keys(train.dataset.name)
            if isinstance(batch.get(key), Tensor) and batch[key].dim() == 4
        }
        if grids:
            write_images(tensorboard_dir(self._exp, run.run_dir), grids, step=run.global_step)


def _saved_experiment(run: RunView) -> Experiment | None:
    """The run's resolved experiment, as the loop saved it in the run folder."""
    import yaml

    path = run.run_dir / "experiment.yml"
    if not path.is_file():
        return None
    return Experiment.from_dict(yaml.safe_load(path.read_text(encoding="utf-8")))


def _image_keys(dataset_name: str) -> tuple[str, ...]:
    cls = DATASETS.find(dataset_name)
    return tuple(getattr(cls, "image_keys", ("image",)))


def find_normalize(ops: Sequence[Any]) -> dict[str, Any] | None:
    """The params of the ``Normalize`` among a dataset's ops (``augment`` then ``transform``),
    defaults filled from okc's ``Normalize``; ``{}`` when there is none; None when it cannot be
    undone for sure (several, or one inside a container)."""
    top = [item for item in ops if item.name == "Normalize"]
    total = _count_normalize(ops)
    if total == 0:
        return {}
    if total > 1 or len(top) != 1:
        return None
    defaults = {
        name: p.default
        for name, p in inspect.signature(AUGMENTATIONS.get("Normalize")).parameters.items()
        if p.default is not p.empty
    }
    return {**defaults, **dict(top[0].params)}


def _count_normalize(items: Sequence[Any]) -> int:
    count = 0
    for item in items:
        name = item.get("name") if isinstance(item, Mapping) else item.name
        params = (item.get("params") if isinstance(item, Mapping) else item.params) or {}
        count += (name == "Normalize") + _count_normalize(params.get("transforms") or ())
    return count


def image_grid(images: Tensor, normalize: Mapping[str, Any] | None) -> Tensor:
    """A (3 or 1, H, W) float grid in [0, 1] of a (B, C, H, W) batch for display: ``normalize``
    undone (``{}``: nothing to undo), or with None each image stretched to [0, 1]."""
    from torchvision.utils import make_grid

    x = images.detach().float().cpu()
    if normalize:
        x = denormalize(x, normalize)
    elif normalize is None:
        low = x.amin(dim=(1, 2, 3), keepdim=True)
        high = x.amax(dim=(1, 2, 3), keepdim=True)
        x = torch.where(high > low, (x - low) / (high - low), x.clamp(0, 1))
    x = x[:, :3] if x.shape[1] >= 3 else x[:, :1]
    return make_grid(x.clamp(0, 1), nrow=math.ceil(math.sqrt(len(x))), padding=1)


def denormalize(x: Tensor, normalize: Mapping[str, Any]) -> Tensor:
    """Invert albumentations' ``Normalize``: images back to [0, 1]."""
    channels = x.shape[1]
    mean = _per_channel(normalize["mean"], channels)
    std = _per_channel(normalize["std"], channels)
    return (x * std + mean) * float(normalize["max_pixel_value"]) / 255.0


def _per_channel(value: Any, channels: int) -> Tensor:
    t = torch.as_tensor(value, dtype=torch.float32).flatten()
    if t.numel() == 1:
        t = t.expand(channels)
    return t[:channels].reshape(1, -1, 1, 1)
