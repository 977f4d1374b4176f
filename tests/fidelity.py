"""The fidelity lane's harness: okc's albumentations-named ops beside albumentations 1.3.0.

Both run on the same uint8 image (and label map, and boxes where the op moves them). okc runs
the op as a config builds it (``{name, params}``) on a batch of ``n`` copies, each drawing its
own random choices; albumentations runs each *choice* the case lists (explicit parameters through
``apply_with_params``). Every okc sample must match one choice within the op's tolerance, and
every choice must be matched by some sample (both directions of each random choice are seen).

The tolerance of each op is one table, in docs/data.md (``TABLE``), read here so the two cannot
drift. Requires the ``fidelity`` extra (part of ``dev``): a missing albumentations or cv2 fails
the lane instead of skipping it.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from okc.data import ops
from okc.data.augment import build_ops
from okc.data.ops import Boxes, Chain

try:
    import albumentations as A
    import cv2
except ImportError as err:  # the fidelity extra is part of dev: never skip the lane
    raise ImportError(
        f"the fidelity tests need albumentations 1.3.0 and cv2 ({err}): "
        "pip install -e '.[dev]' (or '.[fidelity]')"
    ) from err

if A.__version__ != "1.3.0":
    raise ImportError(
        f"the fidelity tests compare with albumentations 1.3.0 (TorchOk's pin), found "
        f"{A.__version__}: pip install 'albumentations==1.3.0'"
    )

__all__ = ["TABLE", "A", "Case", "Tolerance", "compare", "cv2"]

DOCS = Path(__file__).resolve().parents[1] / "docs" / "data.md"

_RNG = np.random.default_rng(0)
IMAGE = _RNG.integers(0, 256, (20, 28, 3)).astype(np.uint8)
SQUARE = _RNG.integers(0, 256, (16, 16, 3)).astype(np.uint8)
# A smooth image: interpolation differences stay small where neighbours are alike.
_YY, _XX = np.mgrid[0:64, 0:64]
SMOOTH = np.stack([_XX * 3, _YY * 3, (_XX + _YY) * 2], -1).clip(0, 255).astype(np.uint8)
BOXES = np.array([[3.0, 4.0, 12.0, 15.0], [10.0, 2.0, 25.0, 9.0]], np.float32)


@dataclass(frozen=True)
class Tolerance:
    """One row of the table: how far okc's image, label map and boxes may be from
    albumentations' (grey levels, fraction of label pixels, pixels)."""

    image_max: float
    image_mean: float
    mask_fraction: float | None  # None: the label map is not compared
    box_pixels: float | None  # None: boxes are not compared
    why: str


def _read_table() -> dict[str, Tolerance]:
    """The fidelity table of docs/data.md: ``| op | image | masks | boxes | why |``."""
    text = DOCS.read_text()
    start, end = text.index("<!-- fidelity-table -->"), text.index("<!-- /fidelity-table -->")
    table: dict[str, Tolerance] = {}
    for line in text[start:end].splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 5 or not cells[0].startswith("`"):
            continue
        name, image, masks, boxes, why = cells
        image_max, image_mean = _image_tolerance(image)
        table[name.replace("`", "")] = Tolerance(
            image_max, image_mean, _fraction(masks), _pixels(boxes), why
        )
    return table


def _image_tolerance(cell: str) -> tuple[float, float]:
    if cell == "exact":
        return 0.0, 0.0
    if cell == "1":
        return 1.0, 1.0
    found = re.fullmatch(r"max (\d+(?:\.\d+)?), mean (\d+(?:\.\d+)?)", cell)
    assert found, f"docs/data.md fidelity table: bad image cell {cell!r}"
    return float(found[1]), float(found[2])


def _fraction(cell: str) -> float | None:
    if cell == "-":
        return None
    if cell == "exact":
        return 0.0
    found = re.fullmatch(r"(\d+(?:\.\d+)?) %", cell)
    assert found, f"docs/data.md fidelity table: bad masks cell {cell!r}"
    return float(found[1]) / 100


def _pixels(cell: str) -> float | None:
    if cell == "-":
        return None
    if cell == "exact":
        return 1e-3
    found = re.fullmatch(r"(\d+(?:\.\d+)?) px", cell)
    assert found, f"docs/data.md fidelity table: bad boxes cell {cell!r}"
    return float(found[1])


TABLE = _read_table()

Output = tuple[np.ndarray, np.ndarray | None, np.ndarray | None]  # image, mask, boxes (xyxy px)


@dataclass
class Case:
    """One comparison: okc's op from ``params`` against albumentations' ``transform`` with each
    of ``choices`` (explicit parameters of ``apply``), or ``reference`` (a function giving the
    choices' outputs) where a transform's parameters cannot be forced."""

    name: str
    params: dict[str, Any]
    transform: Any = None
    choices: Sequence[dict[str, Any]] = ({},)
    reference: Callable[[np.ndarray, np.ndarray, np.ndarray], list[Output]] | None = None
    image: np.ndarray = field(default_factory=lambda: IMAGE)
    n: int = 8
    every_choice: bool = True  # each choice must be drawn by some sample (both directions)
    boxes: bool = False  # compare boxes (the op moves them)
    mask: bool = True
    raw: bool = False  # compare float outputs as they are (Normalize, ToFloat), not 0-255 levels
    variant: str = ""  # the table row is "`name` (variant)" where one op has several rows

    @property
    def key(self) -> str:
        return f"{self.name} ({self.variant})" if self.variant else self.name

    def __str__(self) -> str:
        return self.key


def label_map(image: np.ndarray) -> np.ndarray:
    """A label map of blocks (0-3), so nearest resampling has few ties at block edges."""
    height, width = image.shape[:2]
    ys, xs = np.mgrid[0:height, 0:width]
    return ((ys * 4 // height) + (xs * 4 // width)) % 4


def albumentations_run(
    transform: Any,
    forced: dict[str, Any],
    image: np.ndarray,
    mask: np.ndarray,
    boxes: np.ndarray,
    *,
    with_boxes: bool = True,
) -> Output:
    """albumentations' ``transform`` with its drawn parameters replaced by ``forced``."""
    random.seed(0)
    np.random.seed(0)
    params = transform.get_params()
    if transform.targets_as_params:
        targets = {"image": image, "mask": mask}
        params.update(
            transform.get_params_dependent_on_targets(
                {k: targets[k] for k in transform.targets_as_params}
            )
        )
    params.update(forced)
    height, width = image.shape[:2]
    normalized = [(x1 / width, y1 / height, x2 / width, y2 / height) for x1, y1, x2, y2 in boxes]
    targets = {"image": image, "mask": mask}
    if with_boxes and "bboxes" in transform.targets:
        targets["bboxes"] = normalized
    out = {"bboxes": [], **transform.apply_with_params(params, **targets)}
    out_h, out_w = out["image"].shape[:2]
    out_boxes = np.array(
        [[b[0] * out_w, b[1] * out_h, b[2] * out_w, b[3] * out_h] for b in out["bboxes"]],
        np.float32,
    ).reshape(-1, 4)
    return out["image"], out["mask"], out_boxes


def okc_run(case: Case, mask: np.ndarray, seed: int = 0) -> list[Output]:
    """okc's op, built from config, on ``case.n`` copies of the image: one output per sample."""
    torch.manual_seed(seed)
    built = build_ops([{"name": case.name, "params": dict(case.params)}])
    op = Chain(built)
    image = torch.from_numpy(case.image).permute(2, 0, 1).contiguous()
    mask_t = torch.from_numpy(mask).long()[None]
    boxes_t = torch.from_numpy(BOXES)
    outputs: list[Output] = []
    if all(ops.runs_per_sample(o) for o in built):  # size ops: per sample, uint8, as the pipeline
        for _ in range(case.n):
            out, (out_mask,), moved = ops.run(
                op, image, [mask_t], Boxes([boxes_t], [torch.arange(len(BOXES))])
            )
            outputs.append(
                (out.permute(1, 2, 0).numpy().astype(np.float32), out_mask[0].numpy(),
                 moved.boxes[0].numpy())
            )  # fmt: skip
        return outputs
    scale = 1.0 if case.raw else 255.0
    batch = image[None].float().div(255).repeat(case.n, 1, 1, 1)
    masks = [mask_t[None].float().repeat(case.n, 1, 1, 1)]
    boxes = Boxes([boxes_t] * case.n, [torch.arange(len(BOXES))] * case.n) if case.boxes else None
    result = ops.run(op, batch, masks, boxes)
    out, (out_mask,), moved = result
    for i in range(case.n):
        outputs.append(
            (out[i].permute(1, 2, 0).numpy() * scale, out_mask[i, 0].round().numpy(),
             None if moved is None else moved.boxes[i].numpy())
        )  # fmt: skip
    return outputs


def _clip(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    out = boxes.copy()
    out[:, [0, 2]] = out[:, [0, 2]].clip(0, width)
    out[:, [1, 3]] = out[:, [1, 3]].clip(0, height)
    area = (out[:, 2] - out[:, 0]) * (out[:, 3] - out[:, 1])
    return out[area > 0]  # albumentations' Compose drops the boxes an op moved out of view


def distance(ours: Output, theirs: Output, case: Case, tol: Tolerance) -> tuple[bool, str]:
    """Whether okc's output is within ``tol`` of albumentations', and by how much."""
    image, mask, boxes = ours
    if image.shape != theirs[0].shape:
        return False, f"image shape {image.shape} vs {theirs[0].shape}"
    diff = np.abs((image if case.raw else np.round(image)) - theirs[0].astype(np.float32))
    worst, mean = float(diff.max()), float(diff.mean())
    report = f"image max {worst:g}, mean {mean:.3f}"
    slack = 1e-5 if case.raw else 0.0  # float outputs: equal up to float32 rounding
    ok = worst <= tol.image_max + slack and mean <= tol.image_mean + slack
    if case.mask and tol.mask_fraction is not None:
        wrong = float((mask != theirs[1]).mean())
        report += f"; masks {wrong:.2%} differ"
        ok = ok and wrong <= tol.mask_fraction
    if case.boxes and tol.box_pixels is not None:
        height, width = image.shape[:2]
        theirs_boxes = _clip(theirs[2], height, width)
        if boxes is None or boxes.shape != theirs_boxes.shape:
            return False, f"{report}; boxes {boxes} vs {theirs_boxes}"
        off = float(np.abs(boxes - theirs_boxes).max()) if len(boxes) else 0.0
        report += f"; boxes off by {off:.3f} px"
        ok = ok and off <= tol.box_pixels
    return ok, report


def compare(case: Case) -> None:
    """Assert okc matches albumentations on ``case`` within the table's tolerance."""
    tol = TABLE[case.key]
    mask = label_map(case.image)
    if case.reference is not None:
        expected = case.reference(case.image, mask, BOXES)
    else:
        expected = [
            albumentations_run(case.transform, c, case.image, mask, BOXES, with_boxes=case.boxes)
            for c in case.choices
        ]
    seen: set[int] = set()
    for i, ours in enumerate(okc_run(case, mask)):
        reports = []
        for k, theirs in enumerate(expected):
            ok, report = distance(ours, theirs, case, tol)
            if ok:
                seen.add(k)
                break
            reports.append(f"choice {k}: {report}")
        else:
            raise AssertionError(
                f"{case.key}: okc's sample {i} matches no albumentations output within "
                f"the table's tolerance ({tol}):\n" + "\n".join(reports)
            )
    if case.every_choice:
        missing = sorted(set(range(len(expected))) - seen)
        assert not missing, f"{case.name}: okc never drew choices {missing} in {case.n} samples"
