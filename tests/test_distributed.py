"""Real multi-process runs: two CPU processes under torch.distributed's launcher, gloo backend."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import TINY_EXPERIMENT

import okc
from okc.engine.checkpoint import read_checkpoint

pytestmark = pytest.mark.distributed


def torchrun(tmp_path: Path, *overrides: str) -> Path:
    """Run ``okc fit`` on the tiny experiment in 2 processes; returns the run folder."""
    exp = yaml.safe_load(TINY_EXPERIMENT)
    exp["logger"] = {"log_dir": str(tmp_path / "logs"), "experiment_name": "dist"}
    path = tmp_path / "dist.yml"
    path.write_text(yaml.safe_dump(exp))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "okc", "fit", str(path), *overrides]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("run folder:") == 1  # printed by the main process only
    return Path(done.stdout.split("run folder:")[1].split()[0])


def test_ddp_shards_the_data_and_syncs_the_metrics(tmp_path: Path) -> None:
    run_dir = torchrun(tmp_path, "trainer.max_epochs=2")
    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    # 256 samples / (32 per batch x 2 ranks) = 4 optimizer steps per epoch
    assert max(r["step"] for r in records) == 8
    logged = [r["valid/Accuracy"] for r in records if "valid/Accuracy" in r][-1]
    # the same weights evaluated in one process over all 128 samples give the same accuracy
    exp = yaml.safe_load(TINY_EXPERIMENT)
    exp["logger"] = {"log_dir": str(tmp_path / "single")}
    single = okc.validate(
        okc.Experiment.from_dict({**exp, "name": "single"}),
        checkpoint=run_dir / "checkpoints" / "last.ckpt",
    )
    assert single["valid/Accuracy"] == pytest.approx(logged, abs=1e-6)


def test_fsdp_fits_saves_whole_weights_and_resumes(tmp_path: Path) -> None:
    first = torchrun(tmp_path, "trainer.max_epochs=1", "trainer.strategy=fsdp")
    last = first / "checkpoints" / "last.ckpt"
    state = read_checkpoint(last)
    task_weights = state["model"]
    assert all(not type(v).__name__.startswith("DTensor") for v in task_weights.values())
    resumed = torchrun(
        tmp_path, "trainer.max_epochs=2", "trainer.strategy=fsdp", f"resume_path={last}"
    )
    final = read_checkpoint(resumed / "checkpoints" / "last.ckpt")
    assert final["progress"]["epoch"] == 2 and final["progress"]["global_step"] == 8
    assert final["model"].keys() == task_weights.keys()
