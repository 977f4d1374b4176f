"""Several nodes: two torchrun agents, one process each, meet at a c10d rendezvous on this machine
(as two nodes would at the first node's address) and train one job; with ``--max-restarts 1``
a killed worker is restarted with the others and the job resumes by itself
(``resume_path: auto``). docs/distributed.md shows the same commands for real nodes.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest
import yaml
from conftest import TINY_EXPERIMENT

from okc.engine.checkpoint import read_checkpoint

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

# Rank 1 kills itself (SIGKILL: nothing saved, as when a node is lost) once, at a step.
KILL_WORKER = textwrap.dedent(
    """
    import os
    import signal
    from pathlib import Path

    from okc.engine.hooks import Callback
    from okc.registry import CALLBACKS


    @CALLBACKS.register(override=True)
    class KillWorker(Callback):
        main_process_only = False

        def __init__(self, *, marker: str, step: int) -> None:
            self.marker, self.step = marker, step

        def on_train_batch_end(self, run, logs) -> None:
            if os.environ["RANK"] == "1" and run.global_step == self.step:
                if not Path(self.marker).exists():
                    Path(self.marker).write_text(os.environ["TORCHELASTIC_RESTART_COUNT"])
                    os.kill(os.getpid(), signal.SIGKILL)
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _experiment(tmp_path: Path, **extra) -> Path:
    data = yaml.safe_load(TINY_EXPERIMENT)
    data["logger"] = {"log_dir": str(tmp_path / "logs"), "experiment_name": "nodes"}
    data["trainer"].update(accelerator="cpu", max_epochs=3)
    data.update(extra)
    path = tmp_path / "nodes.yml"
    path.write_text(yaml.safe_dump(data))
    return path


def _two_nodes(path: Path, tmp_path: Path, *, max_restarts: int = 0) -> list[tuple[int, str, str]]:
    """``torchrun --nnodes 2 --nproc-per-node 1`` twice, as on two nodes; (status, out, err)."""
    endpoint, run_id = f"localhost:{_free_port()}", f"okc-{uuid.uuid4().hex[:8]}"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node",
           "1", "--rdzv-backend", "c10d", "--rdzv-endpoint", endpoint, "--rdzv-id", run_id,
           "--max-restarts", str(max_restarts), "-m", "okc", "fit", str(path)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(tmp_path)}
    agents = [
        subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        for _ in range(2)
    ]
    outputs = [agent.communicate(timeout=400) for agent in agents]
    return [(a.returncode, out, err) for a, (out, err) in zip(agents, outputs, strict=True)]


def _steps(stdout: str) -> int:
    run_dir = Path(stdout.split("run folder:")[-1].split()[0])
    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return max(r.get("step", 0) for r in records)


def test_two_torchrun_agents_train_one_job(tmp_path: Path) -> None:
    results = _two_nodes(_experiment(tmp_path), tmp_path)
    for status, _, err in results:
        assert status == 0, err[-3000:]
    stdout = "".join(out for _, out, _ in results)
    assert stdout.count("run folder:") == 1  # one job: its rank 0 prints
    assert _steps(stdout) == 12  # 4 steps an epoch: the two nodes split the data


def test_a_killed_worker_restarts_and_the_job_resumes_by_itself(tmp_path: Path) -> None:
    (tmp_path / "kill_worker.py").write_text(KILL_WORKER)
    marker = tmp_path / "killed"
    path = _experiment(
        tmp_path, resume_path="auto", imports=["kill_worker"],
        callbacks=[{"name": "KillWorker", "params": {"marker": str(marker), "step": 6}}],
    )  # fmt: skip
    results = _two_nodes(path, tmp_path, max_restarts=1)
    for status, _, err in results:
        assert status == 0, err[-3000:]
    assert marker.read_text() == "0"  # killed in the first attempt
    stdout = "".join(out for _, out, _ in results)
    assert stdout.count("run folder:") == 1  # the second attempt finished and printed
    runs = tmp_path / "logs" / "nodes"
    final = read_checkpoint(runs / "auto-1" / "checkpoints" / "last.ckpt")
    assert final["progress"]["global_step"] == 12
    # it resumed from the first attempt's last save (the end of epoch 0), not from scratch
    assert final["experiment"]["resume_path"] == str(runs / "auto" / "checkpoints" / "last.ckpt")
