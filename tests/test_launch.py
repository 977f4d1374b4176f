"""``trainer.devices=N`` starts N processes itself (okc.launch, torch's elastic launcher).

The multi-process tests start real gloo processes on the CPU; under ``torchrun`` okc joins the
group instead (tests/test_distributed.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import TINY_EXPERIMENT

import okc
from okc.config.schema import Trainer
from okc.errors import ConfigError
from okc.launch import RankFailed, num_processes

# A callback that fails on one rank at one step: the deliberately failing rank. It writes the
# time it failed, so the test can measure how long the job takes to end after it.
FAILING_RANK = textwrap.dedent(
    """
    import os
    import time
    from pathlib import Path

    from okc.engine.hooks import Callback
    from okc.errors import ConfigError
    from okc.registry import CALLBACKS


    @CALLBACKS.register(override=True)
    class FailOnRank(Callback):
        def __init__(self, *, rank: int, step: int, user_error: bool = False,
                     stamp: str = "") -> None:
            self.rank, self.step, self.user_error, self.stamp = rank, step, user_error, stamp

        def on_train_batch_end(self, run, logs):
            if int(os.environ["RANK"]) != self.rank or run.global_step != self.step:
                return
            if self.stamp:
                Path(self.stamp).write_text(str(time.time()))
            if self.user_error:
                raise ConfigError("callbacks.0.params", f"rank {self.rank} refuses on purpose")
            raise RuntimeError(f"rank {self.rank} fails on purpose at step {self.step}")
    """
)


def _experiment_file(tmp_path: Path, **extra) -> Path:
    data = yaml.safe_load(TINY_EXPERIMENT)
    data["logger"] = {"log_dir": str(tmp_path / "logs"), "experiment_name": "launch"}
    data["trainer"].update(accelerator="cpu")
    data.update(extra)
    path = tmp_path / "launch.yml"
    path.write_text(yaml.safe_dump(data))
    return path


def _okc(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 300):
    env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "okc", *args], capture_output=True, text=True,
                          env=env, timeout=timeout, cwd=cwd)  # fmt: skip


# --- how many processes ------------------------------------------------------------------------


def test_cpu_devices_count_processes() -> None:
    cpu = Trainer(accelerator="cpu")
    assert num_processes(cpu) == 1  # auto on a CPU: one process, as Lightning
    assert num_processes(Trainer(accelerator="cpu", devices=3)) == 3
    assert num_processes(Trainer(accelerator="cpu", devices="2")) == 2  # TorchOk typed it str
    with pytest.raises(ConfigError, match="trainer.devices: expected auto, a number"):
        num_processes(Trainer(accelerator="cpu", devices=0))
    with pytest.raises(ConfigError, match="trainer.devices: a list of device ids needs GPUs"):
        num_processes(Trainer(accelerator="cpu", devices=(0, 1)))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_devices_count_processes() -> None:
    n = torch.cuda.device_count()
    assert num_processes(Trainer(accelerator="gpu")) == n  # auto: every GPU
    assert num_processes(Trainer(accelerator="gpu", devices=-1)) == n
    assert num_processes(Trainer(accelerator="gpu", devices=(0,))) == 1
    with pytest.raises(ConfigError, match="GPUs asked for"):
        num_processes(Trainer(accelerator="gpu", devices=n + 1))


# --- real processes -----------------------------------------------------------------------------


@pytest.mark.distributed
@pytest.mark.slow
def test_fit_with_two_devices_starts_two_gloo_processes(tmp_path: Path) -> None:
    path = _experiment_file(tmp_path)
    done = _okc("fit", str(path), "trainer.devices=2")
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("run folder:") == 1  # the launcher prints rank 0's result once
    run_dir = Path(done.stdout.split("run folder:")[1].split()[0])
    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    # 256 samples / (32 per batch x 2 ranks) = 4 steps per epoch: the data was split in two
    assert max(r["step"] for r in records) == 8
    assert records[-1]["status"] == "FINISHED"
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert "torch.distributed.elastic" not in done.stderr  # the launcher's own logs stay quiet


@pytest.mark.distributed
@pytest.mark.slow
def test_a_failing_rank_ends_the_job_with_its_error(tmp_path: Path) -> None:
    (tmp_path / "failing_rank.py").write_text(FAILING_RANK)
    stamp = tmp_path / "failed_at"
    path = _experiment_file(
        tmp_path, imports=["failing_rank"],
        callbacks=[{"name": "FailOnRank", "params": {"rank": 1, "step": 2, "stamp": str(stamp)}}],
    )  # fmt: skip
    done = _okc("fit", str(path), "trainer.devices=2", env={"PYTHONPATH": str(tmp_path)})
    ended = time.time()
    assert done.returncode == 1, done.stderr[-3000:]
    assert "error: rank 1 of 2 failed: RuntimeError: rank 1 fails on purpose at step 2" in (
        done.stderr
    )
    assert "failing_rank.py" in done.stderr  # that rank's traceback
    took = ended - float(stamp.read_text())
    assert took < 60, f"the job ended {took:.0f} s after its rank failed"
    print(f"the job ended {took:.1f} s after rank 1 failed")


@pytest.mark.distributed
@pytest.mark.slow
def test_a_user_error_on_a_rank_is_reported_without_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "failing_rank.py").write_text(FAILING_RANK)
    monkeypatch.syspath_prepend(str(tmp_path))  # the spawned workers get this process's path
    path = _experiment_file(
        tmp_path, imports=["failing_rank"],
        callbacks=[{"name": "FailOnRank", "params": {"rank": 0, "step": 1, "user_error": True}}],
    )  # fmt: skip
    with pytest.raises(RankFailed) as info:
        okc.fit(path, ["trainer.devices=2"])
    err = info.value
    assert (err.rank, err.user_error, err.exit_code) == (0, True, 2)
    assert str(err).startswith(
        "rank 0 of 2 failed: ConfigError: callbacks.0.params: rank 0 refuses on purpose"
    )
    assert "Traceback" not in str(err)


@pytest.mark.distributed
@pytest.mark.slow
def test_under_torchrun_okc_joins_instead_of_launching(tmp_path: Path) -> None:
    """torchrun started the 2 processes: trainer.devices=2 must not start 2 more each."""
    path = _experiment_file(tmp_path)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "okc", "fit", str(path), "trainer.devices=2"]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("run folder:") == 1
    run_dir = Path(done.stdout.split("run folder:")[1].split()[0])
    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert max(r["step"] for r in records) == 8  # 2 ranks, not 4: 4 steps per epoch


def test_find_lr_runs_in_one_process_and_says_so(tiny_exp) -> None:
    exp = tiny_exp("trainer.devices=2", "trainer.accelerator=cpu")
    with pytest.warns(UserWarning, match="find-lr runs in one process; trainer.devices=2"):
        result = okc.find_lr(exp, num_steps=3)
    assert len(result.lrs) == 3


@pytest.mark.distributed
@pytest.mark.slow
def test_under_torchrun_every_rank_s_log_ends_with_the_failing_rank_s_error(
    tmp_path: Path,
) -> None:
    """okc runs inside each torchrun worker: rank 0, whose all-reduce lost its peer, ends with
    rank 1's error too, not with gloo's traceback."""
    (tmp_path / "failing_rank.py").write_text(FAILING_RANK)
    path = _experiment_file(
        tmp_path, imports=["failing_rank"],
        callbacks=[{"name": "FailOnRank", "params": {"rank": 1, "step": 2}}],
    )  # fmt: skip
    logs = tmp_path / "ranks"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "--log-dir", str(logs), "--redirects", "2", "-m", "okc", "fit", str(path)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(tmp_path)}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode != 0
    files = sorted(logs.rglob("stderr.log"), key=lambda f: f.parent.name)  # one per rank
    assert [f.parent.name for f in files] == ["0", "1"], done.stderr[-3000:]
    expected = "error: rank 1 of 2 failed: RuntimeError: rank 1 fails on purpose at step 2"
    for rank, file in enumerate(files):
        lines = [ln for ln in file.read_text().splitlines() if ln.strip()]
        assert lines[-1] == expected, f"rank {rank}:\n" + "\n".join(lines[-30:])
    assert "Traceback" not in files[0].read_text()  # rank 0 did not fail: one line
    assert "failing_rank.py" in files[1].read_text()  # rank 1's own traceback, then the line
