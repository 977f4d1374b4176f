"""The benchmarks run (tiny sizes), so they never rot; their numbers are not checked here."""

from __future__ import annotations

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
