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


# Half the tiny experiment's data: the two FSDP launches pay mostly for process start-up; fewer
# steps and valid samples cut what the data costs without changing what is checked.
FSDP_TRAIN, FSDP_VALID = 128, 64


def test_fsdp_saves_sharded_folders_that_resume_and_evaluate_in_one_process(tmp_path: Path) -> None:
    data = (f"data.TRAIN.0.dataset.params.num_samples={FSDP_TRAIN}",
            f"data.VALID.0.dataset.params.num_samples={FSDP_VALID}")  # fmt: skip
    first = torchrun(tmp_path, "trainer.max_epochs=1", "trainer.strategy=fsdp",
                     "trainer.checkpoint_async=true", *data)  # fmt: skip
    last = first / "checkpoints" / "last.ckpt"
    assert last.is_dir()  # each rank wrote its own shard; okc.pt holds the rest
    assert sorted(p.name for p in last.glob("*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]
    head = read_checkpoint(last)
    assert head["sharded"] == ["model", "optimization"] and head["progress"]["epoch"] == 1
    resumed = torchrun(
        tmp_path, "trainer.max_epochs=2", "trainer.strategy=fsdp", f"resume_path={last}", *data
    )
    final = read_checkpoint(resumed / "checkpoints" / "last.ckpt")
    # 128 samples / (32 per batch x 2 ranks) = 2 optimizer steps per epoch
    assert final["progress"]["epoch"] == 2 and final["progress"]["global_step"] == 4
    # one process reads the folder's weights straight into the whole model
    logged = [json.loads(x) for x in (resumed / "metrics.jsonl").read_text().splitlines()]
    accuracy = [r["valid/Accuracy"] for r in logged if "valid/Accuracy" in r][-1]
    exp = yaml.safe_load(TINY_EXPERIMENT)
    exp["data"]["VALID"][0]["dataset"]["params"]["num_samples"] = FSDP_VALID
    exp["logger"] = {"log_dir": str(tmp_path / "single")}
    experiment = okc.Experiment.from_dict({**exp, "name": "single"})
    folder = resumed / "checkpoints" / "last.ckpt"
    assert okc.validate(experiment, checkpoint=folder)["valid/Accuracy"] == pytest.approx(
        accuracy, abs=1e-6
    )
    (onnx,) = okc.export(experiment, checkpoint=folder, fmt="onnx")
    assert onnx.is_file()
