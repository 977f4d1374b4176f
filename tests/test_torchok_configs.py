"""TorchOk's own experiment files (tests/torchok/, verbatim) as a TorchOk user runs them: each
classification and ONNX file passes ``okc check`` unchanged given its environment variables,
and trains 2 steps (tests 2 batches) offline on local data.

Runs override only what a CPU machine without the internet needs, as TorchOk's README does
(``trainer.accelerator='cpu'``): no pretrained download, precision 32 (half precision on a CPU
is ~20x slower), one epoch of 2 batches. The CIFAR files read a tiny CIFAR-10 archive written
where the files look for it (``$HOME/.cache/torchok/cifar10/data``).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import attrs
import pytest
from datafiles import cifar_batch, write_cifar_archive, write_image

import okc
from okc.cli import main
from okc.errors import ConfigErrors

FILES = Path(__file__).parent / "torchok"
CONFIGS = FILES / "examples" / "configs"
CLASSIFICATION = {
    "classification_cifar10": CONFIGS / "classification_cifar10.yaml",
    "classification_cifar10_mlflowx": CONFIGS / "classification_cifar10_mlflowx.yaml",
    "classification_cifar10_multi_validation": CONFIGS
    / "classification_cifar10_multi_validation.yaml",
    "cifar10_experiment": FILES / "tests" / "training_tests" / "cifar10_experiment.yaml",
}
IMAGENET = CONFIGS / "classification_imagenet.yaml"
ONNX_INFER = CONFIGS / "onnx_infer.yaml"
CPU_RUN = (
    "trainer.accelerator=cpu", "task.params.backbone_params.pretrained=false",
    "trainer.precision=32", "trainer.max_epochs=1", "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
)  # fmt: skip


@pytest.fixture
def cifar_home(torchok_env: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A tiny CIFAR-10 archive (2 batches of 128 to train on) where the files download it."""
    from okc.data.datasets import cifar

    folder = torchok_env / ".cache" / "torchok" / "cifar10" / "data"
    folder.mkdir(parents=True)
    files = {f"data_batch_{i}": cifar_batch(52, i, {"labels": 10}) for i in range(1, 6)}
    files["test_batch"] = cifar_batch(24, 9, {"labels": 10})
    files["batches.meta"] = {b"label_names": [f"class{i}".encode() for i in range(10)]}
    archive = folder / cifar.ARCHIVES["CIFAR10"].filename
    md5 = write_cifar_archive(archive, "cifar-10-batches-py", files)
    monkeypatch.setitem(cifar.ARCHIVES, "CIFAR10", attrs.evolve(cifar.ARCHIVES["CIFAR10"], md5=md5))
    return torchok_env


# --- okc check, unchanged -----------------------------------------------------------------------


@pytest.mark.parametrize("name", CLASSIFICATION)
def test_classification_files_check_unchanged(name: str, torchok_env: Path) -> None:
    assert okc.check(CLASSIFICATION[name]) == []


def test_imagenet_file_checks_unchanged(torchok_env: Path) -> None:
    assert okc.check(IMAGENET) == []


def test_old_format_files_are_rejected_with_their_new_places(torchok_env: Path) -> None:
    """TorchOk's tests/base_tests/constructor/configs are a 2022 pre-release format that no
    released TorchOk accepted (its loader rejects log_dir, checkpoint, dataset-level keys; the
    test that loaded them read a path that no longer existed), and config_with_bag.yaml exists
    to be rejected. okc rejects them too, naming where each key went."""
    folder = FILES / "tests" / "base_tests" / "constructor" / "configs"
    for path in sorted(folder.glob("*.yaml")):
        with pytest.raises(ConfigErrors) as err:
            okc.load_experiment(path)
        messages = {e.path: e.message for e in err.value.errors}
        assert (
            messages["log_dir"] == "unknown key (an early TorchOk format; it is logger.log_dir now)"
        )
        assert "ModelCheckpoint" in messages["checkpoint"]
        assert "dataset.params.data_folder" in messages["data.TRAIN.0.dataset.data_folder"]
        assert ("joint_loss.bag" in messages) == (path.name == "config_with_bag.yaml")


def test_check_output_is_not_cut_when_piped(torchok_env: Path, capfd) -> None:
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "okc", "check", str(CLASSIFICATION["cifar10_experiment"])],
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    folder = f"data_folder: {torchok_env}/.cache/torchok/cifar10/data"
    assert folder in done.stdout  # longer than 80 columns, on one line
    assert max(len(line) for line in done.stdout.splitlines()) > 80
    assert not any(line.endswith(" ") for line in done.stdout.splitlines())  # no padding


# --- 2 steps offline --------------------------------------------------------------------------


@pytest.mark.parametrize("name", CLASSIFICATION)
def test_classification_files_train_two_steps(name: str, cifar_home: Path, tmp_path: Path) -> None:
    result = okc.fit(CLASSIFICATION[name], CPU_RUN)
    assert result.global_step == 2
    assert "valid/Accuracy" in result.metrics or "valid/Accuracy_dataloader_0" in result.metrics
    # the files' ModelCheckpoint writes into Hydra's run dir: their logger's folder
    assert result.best_checkpoint is not None and result.best_checkpoint.is_file()
    assert result.best_checkpoint.parent == result.run_dir
    if "mlflow" in name or name == "cifar10_experiment":
        with sqlite3.connect(tmp_path / "mlflow.db") as db:
            (status,) = db.execute("select status from runs").fetchone()
        assert status == "FINISHED"
        uploaded = {p.name for p in (tmp_path / "artifacts").rglob("*.ckpt")}
        assert {"last.ckpt", result.best_checkpoint.name} <= uploaded


def _imagenet_folder(home: Path) -> None:
    """Images of two sizes: the file's augment starts with Resize, which runs per sample."""
    root = home / "dataset" / "imagenet" / "ILSVRC"
    for split, n in (("train", 8), ("val", 4)):
        rows = ["image_path,label"]
        for i in range(n):
            size = (40, 48) if i % 2 else (300, 220)
            write_image(root / split / f"{i}.png", (30 * i, 60, 90), size=size)
            rows.append(f"{split}/{i}.png,{i % 1000}")
        (root / f"ILSVRC_{split}.csv").write_text("\n".join(rows) + "\n")


def test_imagenet_file_trains_two_steps(torchok_env: Path) -> None:
    _imagenet_folder(torchok_env)
    small = ("trainer.devices=1", "trainer.strategy=auto", "data.TRAIN.0.dataloader.batch_size=4",
             "data.VALID.0.dataloader.batch_size=4")  # fmt: skip
    result = okc.fit(IMAGENET, [*CPU_RUN, *small])
    assert result.global_step == 2


# --- onnx_infer.yaml ----------------------------------------------------------------------------


@pytest.fixture
def onnx_placeholders(cifar_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A model exported with the names onnx_infer.yaml uses, at the path it names (``<onnx_path>``,
    relative to the working folder): its input ``input.1``, its output ``<onnx_output>``."""
    import torch

    from okc.exports import export_onnx
    from okc.models import build_model

    torch.manual_seed(0)
    model = build_model({"backbone_name": "test_resnet", "pooling_name": "Pooling",
                         "head_name": "ClassificationHead", "head_params": {"num_classes": 10}})  # fmt: skip
    monkeypatch.chdir(tmp_path)
    export_onnx(model, [torch.rand(2, 3, 32, 32)], tmp_path / "<onnx_path>",
                input_names=["input.1"], output_names=["<onnx_output>"])  # fmt: skip
    return tmp_path


def test_onnx_infer_checks_unchanged(onnx_placeholders: Path) -> None:
    assert okc.check(ONNX_INFER) == []


def test_onnx_infer_runs_test_and_predict(onnx_placeholders: Path, capsys) -> None:
    """The file runs unchanged: its providers (CUDA, absent here: a warning), its input name,
    its output name as the metrics' mapping, its Accuracy/F1Score without task or size."""
    cpu = ("trainer.accelerator=cpu", "trainer.limit_test_batches=2")
    with pytest.warns(UserWarning, match="CUDAExecutionProvider not available"):
        code = main(["-cp", str(CONFIGS), "-cn", "onnx_infer", "+mode=test", *cpu])
    out = capsys.readouterr().out
    assert code == 0 and "test/Accuracy" in out and "test/F1Score" in out
    with pytest.warns(UserWarning, match="CUDAExecutionProvider"):
        path = okc.predict(ONNX_INFER, [*cpu], output=onnx_placeholders / "p.csv")
    header = path.read_text().splitlines()[0].split(",")
    assert header[:2] == ["index", "<onnx_output>_0"]


def test_torchok_style_invocation_runs_the_file_mode(cifar_home: Path, capsys) -> None:
    """``python -m okc -cp DIR -cn NAME`` runs what TorchOk's entry point would: train by
    default, the ``mode`` the command line adds otherwise."""
    path = CLASSIFICATION["classification_cifar10"]
    code = main(["-cp", str(path.parent), "-cn", path.stem, *CPU_RUN])
    assert code == 0 and "run folder:" in capsys.readouterr().out
    code = main([f"--config-path={path.parent}", f"--config-name={path.stem}", "+mode=test",
                 "trainer.accelerator=cpu", "task.params.backbone_params.pretrained=false",
                 "trainer.precision=32", "trainer.limit_test_batches=1",
                 "+data.TEST=${data.VALID}"])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0 and "test/Accuracy" in out, out
