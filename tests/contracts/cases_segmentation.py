"""Cases of the components the segmentation family registers (see README.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import numpy as np
import torch
from datafiles import write_image, write_mask

from contracts.runners import Case, make

MODEL_PARTS = {
    ("necks", "HRNetSegmentationNeck"): Case(),
    ("necks", "HRNetClassificationNeck"): Case(params={"out_channels": 32}),
    ("heads", "OCRSegmentationHead"): Case(
        params={"num_classes": 3, "ocr_mid_channels": 16, "ocr_key_channels": 8}
    ),
}


def _check_sweet_pepper(name: str, case: Case, *, tmp_path: Path, **_: Any) -> None:
    """TorchOk's unpacked layout (``sweet_pepper/`` with its CSVs); the archive path is tested in
    tests/test_segmentation_torchok.py."""
    folder = tmp_path / "sweet_pepper"
    for split in ("train", "valid"):
        write_image(folder / "images" / f"{split}.png", (200, 30, 20))
        write_mask(folder / "masks" / f"{split}.png", np.arange(30).reshape(6, 5) % 3)
        (folder / f"{split}.csv").write_text(
            f"image_path,mask\nimages/{split}.png,masks/{split}.png\n"
        )
    for train in (True, False):
        dataset = make("datasets", name, attrs.evolve(case, params={
            "data_folder": str(tmp_path), "train": train}))  # fmt: skip
        sample = dataset[0]
        assert sample["image"].dtype == torch.uint8 and sample["image"].shape == (3, 6, 5)
        assert sample["mask"].dtype == torch.int64 and sample["mask"].unique().tolist() == [0, 1, 2]


def _check_segmentation_task(name: str, case: Case, **_: Any) -> None:
    task = make("tasks", name, attrs.evolve(case, params={
        "backbone_name": "test_resnet", "neck_name": "UNet", "head_name": "SegmentationHead",
        "head_params": {"num_classes": 3}}))  # fmt: skip
    mask = torch.randint(0, 3, (2, 16, 16))
    out = task.forward_with_gt({"image": torch.rand(2, 3, 16, 16), "mask": mask})
    assert set(out) == set(task.output_keys) and out["prediction"].shape == (2, 3, 16, 16)
    assert torch.equal(out["target"], mask)
    assert task.predict_outputs(out)["prediction"].shape == (2, 16, 16)


CASES: dict[tuple[str, str], Case] = {
    **MODEL_PARTS,
    ("datasets", "SweetPepper"): Case(check=_check_sweet_pepper),
    ("tasks", "SegmentationTask"): Case(check=_check_segmentation_task),
}
