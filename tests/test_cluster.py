"""Where a process sits in a job: torchrun's variables, SLURM's under srun (okc.engine.cluster)."""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import TINY_EXPERIMENT

from okc.config.schema import Trainer
from okc.engine import cluster
from okc.errors import OkcError

TORCH_VARS = ("MASTER_ADDR", "MASTER_PORT", "RANK", "LOCAL_RANK", "WORLD_SIZE", "GROUP_RANK")


@pytest.fixture
def slurm_task(monkeypatch: pytest.MonkeyPatch):
    """Task ``rank`` of a 4-task srun job (no torch variables set)."""
    for name in (*TORCH_VARS, "OKC_CLUSTER", "TORCHELASTIC_RUN_ID"):
        # set, then unset: monkeypatch records the name, so what detect() exports is removed
        # after the test (a bare delenv of a missing name records nothing)
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)

    def make(rank: int = 1, **extra: str) -> None:
        env = {
            "SLURM_NTASKS": "4", "SLURM_PROCID": str(rank), "SLURM_LOCALID": str(rank % 2),
            "SLURM_NODEID": str(rank // 2), "SLURM_NODELIST": "gpu-node[07-08]",
            "SLURM_JOB_ID": "4242123", "SLURM_JOB_NAME": "train", **extra,
        }  # fmt: skip
        for name, value in env.items():
            monkeypatch.setenv(name, value)

    return make


@pytest.mark.parametrize(
    ("nodelist", "first"),
    [
        ("node01", "node01"),
        ("node01,node02", "node01"),
        ("node[01-04,07]", "node01"),
        ("node[07,01-04],gpu1", "node07"),
        ("gpu-a[3-5]-ib", "gpu-a3-ib"),
        ("rack[1-2]-n[05-06]", "rack1-n05"),
    ],
)
def test_the_first_host_of_a_node_list(nodelist: str, first: str) -> None:
    assert cluster.first_host(nodelist) == first


def test_srun_task_exports_torch_variables(slurm_task) -> None:
    slurm_task(rank=3)
    job = cluster.detect(Trainer())
    assert (job.source, job.rank, job.local_rank, job.world_size) == ("slurm", 3, 1, 4)
    assert (job.master_addr, job.master_port) == ("gpu-node07", 15000 + 2123)
    assert {n: os.environ[n] for n in TORCH_VARS} == {
        "MASTER_ADDR": "gpu-node07", "MASTER_PORT": "17123", "RANK": "3", "LOCAL_RANK": "1",
        "WORLD_SIZE": "4", "GROUP_RANK": "1",
    }  # fmt: skip
    assert cluster.detect(Trainer()) == job  # a second call reads the same job


def test_master_port_in_the_environment_wins(slurm_task, monkeypatch) -> None:
    slurm_task(MASTER_PORT="29511")
    assert cluster.detect(Trainer()).master_port == 29511


@pytest.mark.parametrize("job_name", ["bash", "interactive"])
def test_an_interactive_allocation_is_one_process(slurm_task, job_name: str) -> None:
    slurm_task(SLURM_JOB_NAME=job_name)
    assert cluster.detect(Trainer()) == cluster.ClusterEnv()
    assert "WORLD_SIZE" not in os.environ


def test_slurm_off_turns_detection_off(slurm_task) -> None:
    slurm_task()
    assert cluster.detect(Trainer(slurm="off")).source == "single"
    assert "RANK" not in os.environ


def test_torchrun_variables_win_over_slurm(slurm_task, monkeypatch) -> None:
    slurm_task()
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    job = cluster.detect(Trainer())
    assert (job.source, job.rank, job.world_size) == ("torchrun", 1, 2)


def test_a_missing_slurm_variable_is_named(slurm_task, monkeypatch) -> None:
    slurm_task()
    monkeypatch.delenv("SLURM_PROCID")
    with pytest.raises(OkcError, match="SLURM_PROCID is not set"):
        cluster.detect(Trainer())


def test_requeue_only_after_sigusr1_and_says_why_not(slurm_task, monkeypatch) -> None:
    import signal

    slurm_task()
    monkeypatch.setenv("PATH", "/nonexistent")  # no scontrol here
    assert cluster.requeue(Trainer(), signal.SIGTERM) is None  # scancel's signal: no requeue
    assert cluster.requeue(Trainer(slurm_requeue=False), signal.SIGUSR1) is None
    line = cluster.requeue(Trainer(), signal.SIGUSR1)
    assert line == "SLURM job 4242123 not requeued: scontrol is not on PATH"


# --- two processes with SLURM's variables ---------------------------------------------------------


def _free_slurm_port() -> int:
    """A free port of the form 15000 + four digits (what a SLURM job id derives)."""
    for _ in range(100):
        port = 15000 + random.randrange(10_000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 15000-24999")


@pytest.mark.distributed
@pytest.mark.slow
def test_two_srun_tasks_form_one_2_rank_job(tmp_path: Path) -> None:
    data = yaml.safe_load(TINY_EXPERIMENT)
    data["logger"] = {"log_dir": str(tmp_path / "logs"), "experiment_name": "slurm"}
    data["trainer"].update(accelerator="cpu")
    path = tmp_path / "slurm.yml"
    path.write_text(yaml.safe_dump(data))
    job_id = f"9{_free_slurm_port() - 15000:04d}"
    base = {k: v for k, v in os.environ.items() if k not in TORCH_VARS and "TORCHELASTIC" not in k}
    slurm = {"SLURM_NTASKS": "2", "SLURM_NODELIST": "localhost", "SLURM_JOB_ID": job_id,
             "SLURM_JOB_NAME": "okc-test", "OMP_NUM_THREADS": "1"}  # fmt: skip
    tasks = [
        subprocess.Popen(
            [sys.executable, "-m", "okc", "fit", str(path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**base, **slurm, "SLURM_PROCID": str(rank), "SLURM_LOCALID": str(rank)},
        )
        for rank in (0, 1)
    ]
    outputs = [t.communicate(timeout=300) for t in tasks]
    for task, (_, err) in zip(tasks, outputs, strict=True):
        assert task.returncode == 0, err[-3000:]
    stdout = "".join(out for out, _ in outputs)
    assert stdout.count("run folder:") == 1  # one job, printed by its rank 0
    run_dir = Path(stdout.split("run folder:")[1].split()[0])
    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    # 256 samples / (32 per batch x 2 ranks) = 4 steps per epoch: the two tasks split the data
    assert max(r["step"] for r in records) == 8
