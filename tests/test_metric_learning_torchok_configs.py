"""TorchOk's metric-learning example configs pass ``okc check`` and train on a tiny SOP folder.

``torchok/examples/configs/`` holds verbatim copies of TorchOk's ``pairwise_sop.yaml``,
``representation_arcface_sop.yaml`` and ``triplet_sop.yaml`` (eora-ai/torchok at 1fa6f24). The
runs override only what a test must: the data folder, the log folder (the configs write under
``$HOME``), pretrained weights (offline), the accelerator and the number of steps.

Components the configs name that okc does not have yet are stripped, and only those, and only
while ``okc check`` still reports them; the test tightens by itself once they exist:

- issue 12 builds the callbacks ``FinalizeLogger`` and ``ModelCheckpointWithOnnx`` (with
  ``export_to_onnx``), the augmentations ``GridDistortion`` and ``ElasticTransform(border_mode)``
  and the ``TensorBoardLogger`` logger;
- ``FreezeUnfreeze`` (TorchOk's fine-tuning callback) is not in okc yet either.

``representation_arcface_sop``'s ``Accuracy`` names no ``task``: okc reads it from the first
batch's shapes, as torchmetrics 0.x did (okc/metrics/inferred.py).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_metric_learning_data import write_sop

# okc.check is rebound to the module okc.check once that is imported: take the function from api
from okc.api import check as check_experiment
from okc.api import fit
from okc.config.load import experiment_from_data

CONFIGS = Path(__file__).parent / "torchok" / "examples" / "configs"
NOT_YET_IN_OKC = {
    "FinalizeLogger", "ModelCheckpointWithOnnx", "GridDistortion", "ElasticTransform",
    "TensorBoardLogger", "FreezeUnfreeze",
}  # fmt: skip
# 16 train products x 5 images: one full batch of 64 (the configs drop the last partial batch)
TRAIN = {class_id: 5 for class_id in range(1, 17)}
TEST = {11319: 3, 11320: 2, 11321: 2}  # every test product has a match to retrieve
OVERRIDES: dict[str, list[str]] = {}


def environment(folder: Path) -> list[str]:
    return [
        f"data.TRAIN.0.dataset.params.data_folder={folder / 'data'}",
        f"data.VALID.0.dataset.params.data_folder={folder / 'data'}",
        f"logger.log_dir={folder / 'logs'}",
        "task.params.backbone_params.pretrained=false",
        "trainer.accelerator=cpu",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=1",
    ]


def strip_unknown(data: dict[str, Any], name: str) -> tuple[dict[str, Any], list[str]]:
    """``data`` without the components okc's check reports that are in ``NOT_YET_IN_OKC``.

    Every other problem is left in place, so the check after stripping fails on it.
    """
    exp = experiment_from_data(data, OVERRIDES.get(name, []), name=name)
    found: dict[tuple[int, Any], tuple[Any, Any, str]] = {}
    for error in check_experiment(exp):
        # the component is the list item (or section) the error's key path points into
        item_path = re.sub(r"\.(name|params(\.[^.]+)?)$", "", error.path)
        parent, key = _parent(data, item_path)
        item = parent[key]
        component = item.get("name") if isinstance(item, dict) else None
        if component in NOT_YET_IN_OKC:
            found[id(parent), key] = (parent, key, f"{item_path} ({component})")
    # delete list items from the last index down, so earlier indices stay valid
    for parent, key, _ in sorted(found.values(), key=lambda t: t[1], reverse=True):
        del parent[key]
    return data, sorted(where for _, _, where in found.values())


def _parent(data: Any, path: str) -> tuple[Any, Any]:
    *parts, last = path.split(".")
    node = data
    for part in parts:
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node, int(last) if isinstance(node, list) else last


@pytest.mark.parametrize("name", ["pairwise_sop", "representation_arcface_sop", "triplet_sop"])
def test_torchok_config_passes_check(name: str, tmp_path: Path) -> None:
    data = yaml.safe_load((CONFIGS / f"{name}.yaml").read_text())
    data, removed = strip_unknown(data, name)
    exp = experiment_from_data(data, [*OVERRIDES.get(name, []), *environment(tmp_path)], name=name)
    assert check_experiment(exp) == [], removed
    assert {r.split(" (")[1][:-1] for r in removed} <= NOT_YET_IN_OKC


@pytest.mark.slow
@pytest.mark.parametrize("name", ["pairwise_sop", "representation_arcface_sop", "triplet_sop"])
def test_torchok_config_trains_on_a_tiny_sop_folder(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))  # the configs interpolate ${oc.env:HOME}
    write_sop(tmp_path / "data", size=16, train=TRAIN, test=TEST)
    data = yaml.safe_load((CONFIGS / f"{name}.yaml").read_text())
    data, _ = strip_unknown(data, name)
    exp = experiment_from_data(data, [*OVERRIDES.get(name, []), *environment(tmp_path)], name=name)
    result = fit(exp)
    assert result.global_step == 1
    assert 0.0 <= result.metrics["valid/HitAtKMeter"] <= 1.0
