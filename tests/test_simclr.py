"""SimCLRTask and KNNAccuracy: two views drawn by the pipeline's batched augmentation, NT-Xent on
their projections, the k-NN vote against a brute-force count, and a tiny experiment end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from datafiles import write_image

import okc
from okc.api import check as check_experiment
from okc.api import fit
from okc.config.load import experiment_from_data
from okc.config.schema import DataItem, DataLoader, Dataset, Phase
from okc.data.datasets import ContrastiveShapes, UnsupervisedContrastiveDataset
from okc.data.pipeline import build_pipeline
from okc.errors import OkcError
from okc.losses.contrastive import NT_XentLoss
from okc.metrics.knn import KNNAccuracy
from okc.tasks import SimCLRTask

REPO = Path(__file__).resolve().parents[1]
MODEL = {
    "backbone_name": "test_resnet",
    "pooling_name": "Pooling",
    "head_name": "LinearHead",
    "head_params": {"out_channels": 8, "normalize": True},
    "inputs": [{"shape": [3, 16, 16], "dtype": "float32"}],
}

# --- KNNAccuracy ------------------------------------------------------------------------------------


def brute_force_knn(vectors: torch.Tensor, labels: torch.Tensor, k: int, t: float | None) -> float:
    """Leave-one-out k-NN accuracy, one sample at a time."""
    unit = F.normalize(vectors, dim=1)
    correct = 0
    for i in range(len(labels)):
        sims = [(float(unit[i] @ unit[j]), j) for j in range(len(labels)) if j != i]
        votes: dict[int, float] = {}
        for sim, j in sorted(sims, reverse=True)[:k]:
            label = int(labels[j])
            votes[label] = votes.get(label, 0.0) + (
                1.0 if t is None else float(torch.tensor(sim / t).exp())
            )
        best = max(sorted(votes), key=lambda c: votes[c])  # ties: the lower class id
        correct += best == int(labels[i])
    return correct / len(labels)


@pytest.mark.parametrize(("k", "temperature"), [(1, None), (5, None), (5, 0.1), (50, 0.5)])
def test_knn_accuracy_matches_a_brute_force_vote(k: int, temperature: float | None) -> None:
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 4, (40,), generator=g)
    vectors = torch.randn(40, 6, generator=g) + 1.5 * F.one_hot(labels, 6).float()
    metric = KNNAccuracy(k=k, temperature=temperature, search_batch_size=7)
    for chunk in range(0, 40, 16):  # batches of the epoch accumulate
        metric.update(vectors[chunk : chunk + 16], labels[chunk : chunk + 16])
    expected = brute_force_knn(vectors, labels, min(k, 39), temperature)
    assert metric.compute().item() == pytest.approx(expected)


def test_knn_accuracy_is_leave_one_out() -> None:
    """A sample never votes for itself: with k=1, each one's label comes from another."""
    vectors = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    metric = KNNAccuracy(k=1)
    metric.update(vectors, torch.tensor([0, 1, 2, 2]))
    assert metric.compute().item() == 0.5  # the pair labelled 0 / 1 are each other's neighbour
    with pytest.raises(OkcError, match=r"embeddings must be \(batch, dim\) and target \(batch,\)"):
        KNNAccuracy().update(vectors, torch.zeros(4, 2))


# --- the task and its data --------------------------------------------------------------------------


def test_views_become_projections_and_images_representations() -> None:
    torch.manual_seed(0)
    task = SimCLRTask(**MODEL).eval()  # type: ignore[arg-type]
    views = {"image_0": torch.randn(4, 3, 16, 16), "image_1": torch.randn(4, 3, 16, 16)}
    with torch.no_grad():
        out = task.forward_with_gt(views)
        assert set(out) == {"emb1", "emb2"}
        torch.testing.assert_close(out["emb1"].norm(dim=1), torch.ones(4))
        torch.testing.assert_close(out["emb2"], task(views["image_1"]), atol=1e-5, rtol=1e-5)
        labelled = task.forward_with_gt({"image": views["image_0"], "target": torch.arange(4)})
    assert set(labelled) == {"embeddings", "projection", "target"} <= set(task.output_keys)
    assert labelled["embeddings"].shape[1] == task.model.embedding_channels
    torch.testing.assert_close(labelled["projection"], out["emb1"], atol=1e-5, rtol=1e-5)
    loss = NT_XentLoss(temperature=0.2)(out["emb1"], out["emb2"])
    assert torch.isfinite(loss)


def test_the_two_views_are_separate_batched_draws_of_augment() -> None:
    """ContrastiveShapes gives each image twice; the pipeline augments each view with its own
    draw, on the batch (nothing here changes the size, so nothing runs per sample), so the views
    of an image differ; with no augmentation (VALID) they are equal."""
    augment = [{"name": "RandomResizedCrop", "params": {"height": 16, "width": 16, "scale": [0.3, 1]}},
               {"name": "ColorJitter", "params": {"brightness": 0.4, "p": 1.0}}]  # fmt: skip
    dataset = Dataset(name="ContrastiveShapes", params={"num_samples": 8, "image_size": 16},
                      augment=augment)  # fmt: skip
    train = build_pipeline(DataItem(dataset, DataLoader(batch_size=8)), phase=Phase.TRAIN)
    assert train.augment is not None and not train._reader.per_sample  # batched, on the device
    plain = Dataset(name="ContrastiveShapes", params={"num_samples": 8, "image_size": 16})
    valid = build_pipeline(DataItem(plain, DataLoader(batch_size=8)), phase=Phase.VALID)
    for pipeline, differ in ((train, True), (valid, False)):
        batch = pipeline.to_device(next(iter(pipeline)))
        assert set(batch) == {"image_0", "image_1", "index"}
        same = torch.isclose(batch["image_0"], batch["image_1"]).flatten(1).all(1)
        assert bool((~same).all()) if differ else bool(same.all())


def test_unsupervised_contrastive_dataset_reads_a_csv(tmp_path: Path) -> None:
    for i in range(2):
        write_image(tmp_path / f"{i}.png", (50 * i, 10, 10))
    (tmp_path / "images.csv").write_text("path\n0.png\n1.png\n")
    dataset = UnsupervisedContrastiveDataset(data_folder=str(tmp_path), annotation_path="images.csv",
                                             input_column="path")  # fmt: skip
    sample = dataset[1]
    assert len(dataset) == 2 and sample["index"] == 1
    assert sample["image_0"].dtype == torch.uint8 and torch.equal(
        sample["image_0"], sample["image_1"]
    )
    assert dataset.image_keys == ContrastiveShapes.image_keys == ("image_0", "image_1")
    with pytest.raises(OkcError, match="has no column 'image_path'"):
        UnsupervisedContrastiveDataset(data_folder=str(tmp_path), annotation_path="images.csv")


# --- experiments ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_shapes_simclr_fits_and_measures_knn_accuracy_in_valid(tmp_path: Path) -> None:
    exp = okc.load_experiment(
        REPO / "experiments" / "shapes_simclr.yml",
        [f"logger.log_dir={tmp_path}", "trainer.enable_progress_bar=false", "trainer.max_epochs=1",
         "data.TRAIN.0.dataset.params.num_samples=128", "data.VALID.0.dataset.params.num_samples=60",
         "optimization.0.scheduler.params.steps_per_epoch=2"],
    )  # fmt: skip
    assert check_experiment(exp) == []
    result = fit(exp)
    logged = [json.loads(x) for x in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert any("train/NT_XentLoss" in r for r in logged)
    valid = next(r for r in logged if "valid/KNNAccuracy" in r)
    assert 0.0 <= valid["valid/KNNAccuracy"] <= 1.0


TORCHOK_SIMCLR = """
task:
  name: SimCLRTask
  compute_loss_on_valid: false
  params:
    backbone_name: resnet18
    backbone_params: {pretrained: false, in_channels: 3}
    pooling_name: Pooling
    head_name: LinearHead
    head_params: {out_channels: 128, normalize: true}
    inputs: [{shape: [3, 64, 64], dtype: float32}]
joint_loss:
  losses:
    - {name: NT_XentLoss, params: {temperature: 0.5}, mapping: {emb1: emb1, emb2: emb2}}
optimization:
  - optimizer: {name: Adam, params: {lr: 0.001}}
data:
  TRAIN:
    - dataloader: {batch_size: 2, num_workers: 0, shuffle: true, drop_last: true}
      dataset:
        name: UnsupervisedContrastiveDataset
        params: {data_folder: DATA, annotation_path: images.csv}
        transform:
          - {name: Resize, params: {height: 64, width: 64}}
          - {name: Normalize}
          - {name: ToTensorV2}
        augment:
          - {name: HorizontalFlip}
          - {name: ColorJitter, params: {p: 0.8}}
metrics:
  - name: KNNAccuracy
    params: {k: 5}
    mapping: {embeddings: embeddings, target: target}
    phases: [VALID]
trainer: {max_epochs: 1}
"""


def test_a_torchok_format_simclr_config_checks(tmp_path: Path) -> None:
    write_image(tmp_path / "0.png", (1, 2, 3))
    (tmp_path / "images.csv").write_text("image_path\n0.png\n")
    data = yaml.safe_load(TORCHOK_SIMCLR.replace("DATA", str(tmp_path)))
    assert check_experiment(experiment_from_data(data, (), name="simclr")) == []
    data["metrics"][0]["mapping"]["embeddings"] = "embedding"
    errors = check_experiment(experiment_from_data(data, (), name="simclr"))
    assert [e.path for e in errors] == ["metrics.0.mapping.embeddings"]
