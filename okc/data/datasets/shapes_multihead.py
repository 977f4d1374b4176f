"""MultiHeadShapes: Shapes with two targets, the outline and the colour, for multi-head tasks.

The images are ``Shapes``' own (same seed, same pixels); the colour target is read back from the
rendered shape: the channel that dominates its mean colour (0 red, 1 green, 2 blue). A colour
like (200, 190, 30) is neither clearly red nor clearly green, so the colour is only defined where
the dominant channel leads the next one by ``colour_margin`` (0-255 units): ``condition_colour``
says where, and a multi-head task shows the colour head only those rows. That makes the dataset
an offline example of TorchOk's ``condition_<target>`` masks as well as of two heads.
"""

from __future__ import annotations

from typing import Any, Literal

import torch

from okc.data.datasets.base import InputDtype
from okc.data.datasets.shapes import Shapes
from okc.registry import DATASETS

COLOURS = ("red", "green", "blue")


@DATASETS.register
class MultiHeadShapes(Shapes):
    """Sample keys: ``image``, ``target_shape`` (int64 class of the outline), ``target_colour``
    (int64 dominant channel of the shape's colour), ``condition_colour`` (bool: the colour is
    clear, see the module docstring), ``index``.

    Args:
        num_samples, image_size, num_classes, noise, seed, split, train: as for ``Shapes``
            (one shape per image).
        colour_margin: how far (0-255) the dominant channel must lead for a colour label.
    """

    def __init__(
        self,
        *,
        num_samples: int = 1000,
        image_size: int = 32,
        num_classes: int = 10,
        noise: float = 12.0,
        seed: int = 0,
        split: Literal["train", "valid", "test"] = "train",
        train: bool | None = None,
        colour_margin: float = 40.0,
        input_dtype: InputDtype = "float32",
        test_mode: bool = False,
    ) -> None:
        super().__init__(
            num_samples=num_samples, image_size=image_size, num_classes=num_classes, noise=noise,
            seed=seed, split=split, train=train, input_dtype=input_dtype, test_mode=test_mode,
        )  # fmt: skip
        if colour_margin < 0:
            raise ValueError(f"colour_margin must be >= 0, not {colour_margin}")
        self.colour_margin = colour_margin

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < self.num_samples:
            raise IndexError(f"index {index} out of range for {self.num_samples} samples")
        image, kinds, instances = self.render(index)
        sample: dict[str, Any] = {"image": image, "index": index}
        if not self.test_mode:
            colour = image[:, instances == 1].float().mean(dim=1)  # the noise averages out
            top = colour.topk(2).values
            sample["target_shape"] = torch.tensor(kinds[0])
            sample["target_colour"] = colour.argmax()
            sample["condition_colour"] = top[0] - top[1] >= self.colour_margin
        return sample
