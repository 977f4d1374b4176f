"""The benchmarks run (tiny sizes), so they never rot; their numbers are not checked here."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_bench_train_tiny_mode_runs_every_side() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "perf" / "bench_train.py"), "--tiny",
         "--sides", "limit,eager,okc,lightning", "--threads", "1"],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    table = done.stdout
    assert "| limit |" in table and "| eager |" in table and "| okc |" in table


@pytest.mark.slow
def test_bench_data_imagenet_recipe_tiny_runs_every_side(tmp_path: Path) -> None:
    pytest.importorskip("albumentations")
    pytest.importorskip("cv2")
    done = subprocess.run(
        [sys.executable, str(ROOT / "perf" / "bench_data.py"), "--recipe", "imagenet",
         "--num-images", "8", "--batch-size", "4", "--rounds", "1", "--epochs", "1",
         "--num-workers", "1", "--levers"],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
        env={**os.environ, "TMPDIR": str(tmp_path)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    for side in ("okc, num_workers 1, FancyPCA", "okc, num_workers auto, no FancyPCA",
                 "albumentations + cv2, FancyPCA", "torchvision v2 + PIL, no FancyPCA",
                 "okc tail batched (before)"):  # fmt: skip
        assert f"| {side}" in done.stdout
    assert "x albumentations + cv2, FancyPCA" in done.stdout
