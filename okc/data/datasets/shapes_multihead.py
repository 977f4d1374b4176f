"""MultiHeadShapes: Shapes with two targets, the outline and the colour, for multi-head tasks.

The images are ``Shapes``' own (same seed, same pixels); the colour target is read back from the
rendered shape: the channel that dominates its mean colour (0 red, 1 green, 2 blue). A colour
like (200, 190, 30) is neither clearly red nor clearly green, so the colour is only defined where
the dominant channel leads the next one by ``colour_margin`` (0-255 units): ``condition_colour``
says where, and a multi-head task shows the colour head only those rows. That makes the dataset
an offline example of TorchOk's ``condition_<target>`` masks as well as of two heads.
"""

from __future__ import annotations

from typing import Any

import attrs
import torch

from okc.data.datasets.shapes import Drawing, DrawnShapes
from okc.errors import ParamError
from okc.registry import DATASETS

COLOURS = ("red", "green", "blue")


@DATASETS.register
class MultiHeadShapes(DrawnShapes):
    """Sample keys: ``image``, ``target_shape`` (int64 class of the outline), ``target_colour``
    (int64 dominant channel of the shape's colour), ``condition_colour`` (bool: the colour is
    clear, see the module docstring), ``index``.

    Args: ``Drawing``'s (one shape per image), and ``colour_margin``: how far (0-255) the
    dominant channel must lead for a colour label.
    """

    @attrs.frozen(kw_only=True)
    class Params(Drawing):
        colour_margin: float = 40.0

        def __attrs_post_init__(self) -> None:
            super().__attrs_post_init__()
            if self.colour_margin < 0:
                raise ParamError("colour_margin", f"must be >= 0, got {self.colour_margin}")

    def load(self, p: Params) -> None:
        super().load(p)
        self.colour_margin = p.colour_margin

    def __getitem__(self, index: int) -> dict[str, Any]:
        image, kinds, instances = self.render(index)
        sample: dict[str, Any] = {"image": image, "index": index}
        if not self.test_mode:
            colour = image[:, instances == 1].float().mean(dim=1)  # the noise averages out
            top = colour.topk(2).values
            sample["target_shape"] = torch.tensor(kinds[0])
            sample["target_colour"] = colour.argmax()
            sample["condition_colour"] = top[0] - top[1] >= self.colour_margin
        return sample
