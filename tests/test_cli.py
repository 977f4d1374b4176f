"""The ``okc`` command as a user runs it: output, exit codes, no tracebacks for user errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from okc.cli import main

ROOT = Path(__file__).parents[1]
SHAPES = ROOT / "experiments" / "shapes.yml"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("name", ["shapes.yml", "cifar.yml", "cifar_folder.yml", "shapes.toml"])
def test_check_accepts_every_shipped_experiment(capsys, name: str) -> None:
    code, out, err = run(capsys, "check", str(ROOT / "experiments" / name))
    assert code == 0, err
    assert "task:" in out and "ClassificationTask" in out
    assert "every component name resolves" in out


def test_check_reports_each_problem_with_its_key_path(capsys) -> None:
    code, out, err = run(capsys, "check", str(SHAPES), "trainer.max_epochs=ten", "+trainr.x=1")
    assert code == 2
    assert "trainer.max_epochs: expected int, got 'ten'" in err
    assert "trainr: unknown key, did you mean 'trainer'?" in err
    assert "Traceback" not in err + out


def test_check_finds_unregistered_names_and_bad_params(capsys) -> None:
    code, _, err = run(
        capsys, "check", str(SHAPES),
        "task.params.backbone_name=resnt18",
        "data.TRAIN.0.dataset.augment.0.name=HorizntalFlip",
        "metrics.0.params.num_clases=10",
        "optimization.0.optimizer.params.momentm=0.9",
    )  # fmt: skip
    assert code == 2
    assert "task.params.backbone_name: unknown backbone 'resnt18', did you mean 'resnet18'" in err
    assert (
        "data.TRAIN.0.dataset.augment.0.name: unknown augmentation 'HorizntalFlip', did you mean 'HorizontalFlip'"
        in err
    )
    assert "metrics.0.params.num_clases" in err and "num_classes" in err
    assert "optimization.0.optimizer.params.momentm" in err
    assert "Traceback" not in err


def test_missing_file_and_bad_yaml(capsys, tmp_path: Path) -> None:
    code, _, err = run(capsys, "fit", str(tmp_path / "nope.yml"))
    assert code == 2 and "experiment file not found" in err
    bad = tmp_path / "bad.yml"
    bad.write_text("task: [unclosed\n")
    code, _, err = run(capsys, "check", str(bad))
    assert code == 2 and "bad.yml:2:1: invalid YAML" in err


def test_debug_shows_the_traceback(capsys) -> None:
    with pytest.raises(Exception, match="expected int"):
        main(["check", str(SHAPES), "trainer.max_epochs=ten", "--debug"])


def test_fit_and_test_from_the_command_line(capsys, tmp_path: Path) -> None:
    overrides = [
        f"logger.log_dir={tmp_path}", "trainer.fast_dev_run=2", "trainer.enable_progress_bar=false",
        "task.params.backbone_name=test_resnet",
    ]  # fmt: skip
    code, out, err = run(capsys, "fit", str(SHAPES), *overrides)
    assert code == 0, err
    assert f"run folder: {tmp_path}" in out
    with pytest.warns(UserWarning, match="freshly initialized"):
        code, out, err = run(capsys, "test", str(SHAPES), *overrides)
    assert code == 0, err
    assert "test/Accuracy" in out


def test_torchok_style_invocation(capsys, tmp_path: Path) -> None:
    code, out, _ = run(capsys, "-cp", str(ROOT / "experiments"), "-cn", "shapes", "+mode=test",
                       f"logger.log_dir={tmp_path}", "task.params.backbone_name=test_resnet",
                       "trainer.limit_test_batches=1")  # fmt: skip
    assert code == 0 and "test/Accuracy" in out


def test_python_dash_m_okc() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "okc", "--version"], capture_output=True, text=True, check=True
    )
    assert done.stdout.startswith("okc ")


def test_check_catches_mappings_and_loader_indices_statically(capsys) -> None:
    code, _, err = run(
        capsys, "check", str(SHAPES), "metrics.0.mapping.preds=logits",
        "metrics.1.val_dataloader_idxs=[0,3]",
    )  # fmt: skip
    assert code == 2
    assert (
        "metrics.0.mapping.preds: ClassificationTask produces no 'logits'; it produces: embeddings, prediction, target"
        in err
    )
    assert "metrics.1.val_dataloader_idxs: data loader 3 does not exist; data.VALID has 1" in err
