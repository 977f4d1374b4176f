"""Preemption: a signal stops fit at a step boundary on every rank, with a resumable checkpoint,
and ``resume_path: auto`` continues the run by itself (okc.engine.preempt, okc.api.resolve_auto).

The multi-process tests run the tiny experiment under ``torchrun`` with 2 gloo ranks and send
the signal to the job (torchrun's agent, which forwards it to its workers), as a cluster does.
"""

from __future__ import annotations

import json
import os
import signal
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
from okc.cli import main as okc_main
from okc.engine import preempt
from okc.engine.checkpoint import read_checkpoint
from okc.engine.hooks import Callback
from okc.engine.loop import Loop
from okc.engine.preempt import EXIT_PREEMPTED, Interrupted, Preemption

# Rank 0 signals the job once (a marker file keeps the rerun of the same command from doing it
# again), at an optimizer step or in the first validation, then waits for the signal to come
# back from torchrun's agent: so the ranks stop at this boundary, not a few steps later.
SIGNAL_JOB = textwrap.dedent(
    """
    import os
    import signal
    import time
    from pathlib import Path

    from okc.engine.hooks import Callback
    from okc.registry import CALLBACKS


    @CALLBACKS.register(override=True)
    class SignalJob(Callback):
        main_process_only = False

        def __init__(self, *, marker: str, step: int = -1, validation_batch: int = -1,
                     signal_name: str = "SIGTERM") -> None:
            self.marker, self.step, self.batch = marker, step, validation_batch
            self.signal_name = signal_name

        def _fire(self) -> None:
            if os.environ.get("RANK", "0") != "0" or Path(self.marker).exists():
                return
            Path(self.marker).write_text(str(time.time()))
            os.kill(os.getppid(), getattr(signal, self.signal_name))
            time.sleep(3)

        def on_train_batch_end(self, run, logs) -> None:
            if run.global_step == self.step:
                self._fire()

        def on_validation_batch_end(self, run, batch_idx, num_batches) -> None:
            if run.epoch == 0 and batch_idx == self.batch:
                self._fire()
    """
)


# --- one process ----------------------------------------------------------------------------------


def test_a_signal_sets_the_flag_and_the_handlers_come_back() -> None:
    preemption = Preemption(["SIGUSR1"])
    before = signal.getsignal(signal.SIGUSR1)
    with preemption.installed():
        assert preemption.agree() == 0
        os.kill(os.getpid(), signal.SIGUSR1)
        assert preemption.requested
        assert preemption.agree() == signal.SIGUSR1  # one process: no collective
    assert signal.getsignal(signal.SIGUSR1) is before
    assert Interrupted("x", signum=signal.SIGUSR1).exit_code == EXIT_PREEMPTED == 75
    assert Interrupted("x", signum=signal.SIGINT).exit_code == 130


def test_one_ctrl_c_seen_twice_stops_with_a_checkpoint_a_second_one_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Under torchrun a Ctrl-C reaches each worker from the terminal and from the agent."""
    preemption = Preemption([])
    with preemption.installed():
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)  # the agent's copy, a moment later
        assert preemption.agree() == signal.SIGINT
        monkeypatch.setattr(preempt, "SAME_PRESS_S", 0.0)  # as if a second later
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)


def test_an_unknown_signal_name_is_a_config_error(tiny_exp) -> None:
    with pytest.raises(okc.ConfigErrors, match="trainer.preempt_signals"):
        tiny_exp("trainer.preempt_signals=[SIGKILL]")


@pytest.mark.slow
def test_a_stop_in_validation_saves_without_a_checkpoint_callback_and_resumes_exactly(
    tiny_exp,
) -> None:
    """A Loop with no checkpoint callback still saves (checkpoints/last.ckpt); the resumed run
    runs the interrupted validation again and ends on the uninterrupted run's weights."""
    base = ("trainer.max_epochs=2", "data.VALID.0.dataloader.batch_size=16")
    straight = okc.fit(tiny_exp(*base))
    loop = Loop(tiny_exp(*base))
    loop.callbacks.append(_StopInValidation(loop))
    with pytest.raises(Interrupted, match=r"by SIGTERM at epoch 0, step 8 \(in validation\)"):
        loop.fit()
    saved = loop.run_dir / "checkpoints" / "last.ckpt"
    state = read_checkpoint(saved)
    assert state["progress"] == {"epoch": 0, "global_step": 8, "batch_idx": 8}
    resumed = okc.fit(tiny_exp(*base, f"resume_path={saved}"))
    first = json.loads((resumed.run_dir / "metrics.jsonl").read_text().splitlines()[0])
    assert first["step"] == 8 and "valid/Accuracy" in first  # epoch 0's validation ran again
    _assert_same_weights(resumed.last_checkpoint, straight.last_checkpoint)


class _StopInValidation(Callback):
    """Asks for a stop as SIGTERM does, in the first validation."""

    def __init__(self, loop: Loop, batch: int = 2) -> None:
        self.loop, self.batch = loop, batch

    def on_validation_batch_end(self, run, batch_idx: int, num_batches: int) -> None:
        if run.epoch == 0 and batch_idx == self.batch:
            self.loop.request_interrupt(signal.SIGTERM)


@pytest.mark.slow
def test_okc_fit_exits_75_and_resume_path_auto_continues(tiny_exp, tmp_path: Path) -> None:
    """The command's status, and the same command run again finishes the run."""
    data = yaml.safe_load(TINY_EXPERIMENT)
    data["logger"] = {"log_dir": str(tmp_path / "logs"), "experiment_name": "auto"}
    data["resume_path"] = "auto"
    data["imports"] = ["signal_job"]
    marker = tmp_path / "signalled"
    data["callbacks"] = [{"name": "SignalJob", "params": {"marker": str(marker), "step": 5}}]
    (tmp_path / "signal_job.py").write_text(
        SIGNAL_JOB.replace("os.getppid()", "os.getpid()").replace("time.sleep(3)", "")
    )
    path = tmp_path / "auto.yml"
    path.write_text(yaml.safe_dump(data))
    sys.path.insert(0, str(tmp_path))
    try:
        assert okc_main(["check", str(path)]) == 0
        assert okc_main(["fit", str(path)]) == EXIT_PREEMPTED
        first = tmp_path / "logs" / "auto" / "auto" / "checkpoints" / "last.ckpt"
        assert read_checkpoint(first)["progress"]["global_step"] == 5
        assert okc_main(["fit", str(path)]) == 0  # the same command: resumes, finishes
    finally:
        sys.path.remove(str(tmp_path))
    final = read_checkpoint(tmp_path / "logs" / "auto" / "auto-1" / "checkpoints" / "last.ckpt")
    assert final["progress"]["global_step"] == 16
    assert final["experiment"]["resume_path"] == str(first)


def _assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = read_checkpoint(a)["model"], read_checkpoint(b)["model"]
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key


# --- two ranks under torchrun ---------------------------------------------------------------------


def _job_file(tmp_path: Path, log_dir: Path, trainer: dict | None = None, **signal_params) -> Path:
    """The tiny experiment with ``resume_path: auto`` and the SignalJob callback."""
    (tmp_path / "signal_job.py").write_text(SIGNAL_JOB)
    data = yaml.safe_load(TINY_EXPERIMENT)
    data["logger"] = {"log_dir": str(log_dir), "experiment_name": "job"}
    data["trainer"].update(accelerator="cpu", max_epochs=3, **(trainer or {}))
    data["data"]["VALID"][0]["dataloader"]["batch_size"] = 16  # 4 batches a rank
    data.update(resume_path="auto", imports=["signal_job"])
    params = {"marker": str(tmp_path / "signalled"), **signal_params}
    data["callbacks"] = [{"name": "SignalJob", "params": params}]
    path = log_dir.parent / f"{log_dir.name}.yml"
    path.write_text(yaml.safe_dump(data))
    return path


def _torchrun(path: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "okc", "fit", str(path)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(tmp_path)}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The last checkpoint of the same 2-rank job run without a signal."""
    tmp = tmp_path_factory.mktemp("uninterrupted")
    path = _job_file(tmp, tmp / "logs", step=5)
    (tmp / "signalled").write_text("never")  # the callback does nothing
    done = _torchrun(path, tmp)
    assert done.returncode == 0, done.stderr[-3000:]
    return tmp / "logs" / "job" / "auto" / "checkpoints" / "last.ckpt"


@pytest.mark.distributed
@pytest.mark.slow
@pytest.mark.parametrize(
    ("signal_params", "stopped"),
    [
        ({"step": 5}, "at epoch 1, step 5;"),  # 4 steps an epoch with 2 ranks: mid-epoch
        ({"validation_batch": 1}, "at epoch 0, step 4 (in validation);"),
    ],
    ids=["mid-epoch", "in-validation"],
)
def test_sigterm_to_a_2_rank_job_saves_and_the_rerun_ends_bit_identical(
    tmp_path: Path, uninterrupted: Path, signal_params: dict, stopped: str
) -> None:
    path = _job_file(tmp_path, tmp_path / "logs", **signal_params)
    done = _torchrun(path, tmp_path)
    took = time.time() - float((tmp_path / "signalled").read_text())
    assert done.returncode != 0, done.stdout[-2000:]
    assert took < 30, f"the job ended {took:.0f} s after SIGTERM"
    print(f"{stopped} the job ended {took:.1f} s after SIGTERM")
    saved = tmp_path / "logs" / "job" / "auto" / "checkpoints" / "last.ckpt"
    # both ranks stopped at the same step and said so, with the checkpoint to resume from
    assert (
        done.stderr.count(f"interrupted by SIGTERM {stopped} resume with resume_path={saved}") == 2
    ), done.stderr[-3000:]

    again = _torchrun(path, tmp_path)  # the same command: resume_path auto finds the checkpoint
    assert again.returncode == 0, again.stderr[-3000:]
    final = tmp_path / "logs" / "job" / "auto-1" / "checkpoints" / "last.ckpt"
    assert read_checkpoint(final)["experiment"]["resume_path"] == str(saved)
    _assert_same_weights(final, uninterrupted)


@pytest.mark.distributed
@pytest.mark.slow
def test_sigusr1_to_okc_fit_with_two_devices_stops_both_processes_with_status_75(
    tmp_path: Path,
) -> None:
    """``okc fit trainer.devices=2`` starts the processes itself: the signal reaches the
    launcher, which passes it on; the command exits 75 with the workers' message."""
    path = _job_file(tmp_path, tmp_path / "logs", step=5, signal_name="SIGUSR1")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "okc", "fit", str(path), "trainer.devices=2"],
                          capture_output=True, text=True, env=env, timeout=300)  # fmt: skip
    assert done.returncode == EXIT_PREEMPTED, done.stderr[-3000:]
    saved = tmp_path / "logs" / "job" / "auto" / "checkpoints" / "last.ckpt"
    assert f"interrupted by SIGUSR1 at epoch 1, step 5; resume with resume_path={saved}" in (
        done.stderr
    )
    assert read_checkpoint(saved)["progress"]["global_step"] == 5


@pytest.mark.distributed
@pytest.mark.slow
def test_sigterm_to_an_fsdp2_job_saves_its_shards_and_the_rerun_resumes(tmp_path: Path) -> None:
    """Under FSDP2 the stop's checkpoint is sharded (a folder, a shard per rank) and complete
    before the exit, also with asynchronous saving; the same command resumes from it."""
    fsdp = {"strategy": "fsdp", "checkpoint_async": True}
    path = _job_file(tmp_path, tmp_path / "logs", trainer=fsdp, step=5)
    done = _torchrun(path, tmp_path)
    assert done.returncode != 0, done.stdout[-2000:]
    saved = tmp_path / "logs" / "job" / "auto" / "checkpoints" / "last.ckpt"
    assert saved.is_dir() and sorted(p.name for p in saved.glob("*.distcp")) == [
        "__0_0.distcp", "__1_0.distcp",
    ], done.stderr[-3000:]  # fmt: skip
    assert read_checkpoint(saved)["progress"]["global_step"] == 5
    again = _torchrun(path, tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    final = read_checkpoint(tmp_path / "logs" / "job" / "auto-1" / "checkpoints" / "last.ckpt")
    assert final["progress"]["global_step"] == 12
    assert final["experiment"]["resume_path"] == str(saved)


@pytest.mark.slow
def test_a_stop_in_the_sanity_check_saves_before_the_first_step(tiny_exp) -> None:
    loop = Loop(tiny_exp("trainer.num_sanity_val_steps=2"))
    loop.callbacks.append(_StopInValidation(loop, batch=1))
    with pytest.raises(Interrupted, match=r"by SIGTERM at epoch 0, step 0; resume with"):
        loop.fit()
    state = read_checkpoint(loop.run_dir / "checkpoints" / "last.ckpt")
    assert state["progress"] == {"epoch": 0, "global_step": 0, "batch_idx": 0}
