"""Shared test setup: offline, one persistent inductor cache, small thread pools."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

# Offline before timm/huggingface_hub are imported: a pretrained lookup fails in ~0.3 s, not ~50 s.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# One inductor cache for every test run, so compile tests pay the cold compile once per machine.
os.environ.setdefault(
    "TORCHINDUCTOR_CACHE_DIR", str(Path(tempfile.gettempdir()) / "okc-test-inductor-cache")
)

import pytest
import torch

# pytest -n N runs N worker processes: give each its share of the cores, or 2 workers x 2 torch
# threads on 2 cores wait on each other (measured: several times slower than 1 thread each).
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    torch.set_num_threads(
        max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
    )

requires_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(autouse=True)
def _okc_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Keep okc's cache (data, logs) out of the user's home during tests."""
    home = tmp_path_factory.mktemp("okc-home")
    monkeypatch.setenv("OKC_HOME", str(home))
    return home


TINY_EXPERIMENT = """
task:
  name: ClassificationTask
  params:
    backbone_name: test_resnet
    pooling_name: Pooling
    head_name: ClassificationHead
    head_params: {num_classes: 4}
    inputs: [{shape: [3, 16, 16], dtype: float32}]
joint_loss:
  losses:
    - {name: CrossEntropyLoss, tag: ce, mapping: {input: prediction, target: target}}
optimization:
  - optimizer: {name: AdamW, params: {lr: 0.01}}
data:
  TRAIN:
    - dataset:
        name: Shapes
        params: {num_samples: 256, image_size: 16, num_classes: 4, split: train}
        transform: [{name: Normalize, params: {mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25]}}]
        augment: [{name: HorizontalFlip}]
      dataloader: {batch_size: 32, shuffle: true, drop_last: true}
  VALID:
    - dataset:
        name: Shapes
        params: {num_samples: 128, image_size: 16, num_classes: 4, split: valid}
        transform: [{name: Normalize, params: {mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25]}}]
      dataloader: {batch_size: 64}
metrics:
  - name: Accuracy
    params: {task: multiclass, num_classes: 4}
    mapping: {preds: prediction, target: target}
    phases: [TRAIN, VALID, TEST]
trainer: {max_epochs: 2, log_every_n_steps: 2, enable_progress_bar: false, num_sanity_val_steps: 0}
seed_params: {seed: 0}
"""


@pytest.fixture
def tiny_exp(tmp_path: Path):
    """A factory of tiny Shapes experiments (a 0.4M-parameter timm model on 16x16 images) that
    write their run folders under ``tmp_path``; ``tiny_exp("trainer.max_epochs=3", ...)``."""
    import yaml

    from okc.config.load import experiment_from_data

    def make(*overrides: str, text: str = TINY_EXPERIMENT):
        data = yaml.safe_load(text)
        data.setdefault("logger", {"log_dir": str(tmp_path / "logs"), "experiment_name": "tiny"})
        return experiment_from_data(data, overrides, name="tiny")

    return make


@pytest.fixture
def torchok_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The environment TorchOk's files read: HOME, the MLflow database and artifact store."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for name in ("DB_URI", "CV_MLFLOW_TRACKING_URI"):
        monkeypatch.setenv(name, f"sqlite:///{tmp_path / 'mlflow.db'}")
    for name in ("S3_ARTIFACT_BUCKET", "CV_S3_ARTIFACT_BUCKET"):
        monkeypatch.setenv(name, str(tmp_path / "artifacts"))
    monkeypatch.setenv("LOGDIR", str(tmp_path / "logs"))
    return home
