"""Where this process sits in a job: torchrun's variables, SLURM's under ``srun``, or alone.

``torch.distributed.init_process_group("env://")`` reads ``MASTER_ADDR``, ``MASTER_PORT``,
``RANK`` and ``WORLD_SIZE``. torchrun (and ``okc.launch``) set them; ``srun`` does not, it sets
``SLURM_NTASKS``, ``SLURM_PROCID``, ``SLURM_LOCALID``, ``SLURM_NODELIST`` and ``SLURM_JOB_ID``.
``detect`` turns SLURM's into torch's, as Lightning's ``SLURMEnvironment`` does: the first host
of the node list is the rendezvous address, the port is derived from the job id (``15000`` + its
last four digits; ``MASTER_PORT`` wins when set), so every task of a job computes the same
address without talking to the others. So ``srun okc fit ...`` forms one job of
``SLURM_NTASKS`` processes instead of N independent runs.

An interactive allocation (``salloc``, then a shell) also sets ``SLURM_NTASKS``, though okc then
runs as one process: as in Lightning, a job named ``bash`` or ``interactive`` is not detected,
and ``trainer.slurm: off`` turns detection off altogether.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from typing import Literal

import attrs

from okc.config.schema import Trainer
from okc.errors import OkcError

DEFAULT_PORT = 12910  # Lightning's, for a SLURM job without a job id
INTERACTIVE_JOB_NAMES = ("bash", "interactive")
_MARK = "OKC_CLUSTER"  # set when detect exported SLURM's ranks (a later call says "slurm")


@attrs.frozen
class ClusterEnv:
    """This process's place in the job; ``source`` says who started it."""

    source: Literal["single", "torchrun", "slurm"] = "single"
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    master_addr: str | None = None
    master_port: int | None = None

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def detect(trainer: Trainer | None = None) -> ClusterEnv:
    """This process's ranks; under ``srun`` (``trainer.slurm: auto``) also exports torch's
    variables, so ``init_process_group("env://")`` forms the job."""
    env = os.environ
    if "WORLD_SIZE" in env and _MARK not in env:  # torchrun, okc.launch or another launcher
        return ClusterEnv(
            "torchrun", rank=_int("RANK", 0), local_rank=_int("LOCAL_RANK", 0),
            world_size=_int("WORLD_SIZE", 1), master_addr=env.get("MASTER_ADDR"),
            master_port=_int("MASTER_PORT", 0) or None,
        )  # fmt: skip
    if not slurm_detected(trainer):
        return ClusterEnv()
    cluster = _from_slurm()
    if cluster.distributed:
        env.update(
            MASTER_ADDR=str(cluster.master_addr), MASTER_PORT=str(cluster.master_port),
            RANK=str(cluster.rank), LOCAL_RANK=str(cluster.local_rank),
            WORLD_SIZE=str(cluster.world_size), GROUP_RANK=env.get("SLURM_NODEID", "0"),
        )  # fmt: skip
        env[_MARK] = "slurm"
    return cluster


def slurm_detected(trainer: Trainer | None = None) -> bool:
    """Whether this process is a task ``srun`` started (not an interactive allocation's shell)."""
    if trainer is not None and trainer.slurm == "off":
        return False
    return "SLURM_NTASKS" in os.environ and (
        os.environ.get("SLURM_JOB_NAME") not in INTERACTIVE_JOB_NAMES
    )


def _from_slurm() -> ClusterEnv:
    nodes = os.environ.get("SLURM_NODELIST") or os.environ.get("SLURM_JOB_NODELIST")
    if not nodes:
        raise OkcError("SLURM_NODELIST is not set: cannot find the job's first node (or set "
                       "trainer.slurm=off to run as one process)")  # fmt: skip
    return ClusterEnv(
        "slurm", rank=_int("SLURM_PROCID"), local_rank=_int("SLURM_LOCALID"),
        world_size=_int("SLURM_NTASKS"), master_addr=os.environ.get("MASTER_ADDR") or
        first_host(nodes), master_port=_int("MASTER_PORT", 0) or slurm_port(),
    )  # fmt: skip


def _int(name: str, default: int | None = None) -> int:
    value = os.environ.get(name)
    if value is None:
        if default is None:
            raise OkcError(f"{name} is not set: srun sets it for each task (or set "
                           "trainer.slurm=off to run as one process)")  # fmt: skip
        return default
    try:
        return int(value)
    except ValueError:
        raise OkcError(f"{name}={value!r} in the environment: expected a number") from None


def slurm_port() -> int:
    """The rendezvous port every task of the job derives alike: 15000 + the job id's last four
    digits (Lightning's rule), ``DEFAULT_PORT`` without a job id."""
    job_id = os.environ.get("SLURM_JOB_ID", "")
    return 15000 + int(job_id[-4:]) if job_id.isdigit() else DEFAULT_PORT


def first_host(nodelist: str) -> str:
    """The first host of a SLURM node list: ``node[01-04,07],gpu1`` → ``node01``."""
    item, depth = "", 0
    for ch in nodelist.strip():
        if ch == "," and depth == 0:
            break
        depth += {"[": 1, "]": -1}.get(ch, 0)
        item += ch
    host = ""
    while "[" in item:
        prefix, _, rest = item.partition("[")
        ranges, _, item = rest.partition("]")
        host += prefix + ranges.split(",")[0].split("-")[0]
    return host + item


def job_id() -> str | None:
    """The SLURM job to requeue (an array task's own id), or None outside SLURM."""
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"{array}_{task}" if array and task else os.environ.get("SLURM_JOB_ID")


def requeue(trainer: Trainer, signum: int) -> str | None:
    """After a SIGUSR1 stop under SLURM (``sbatch --signal=USR1@90``: the time limit is near),
    put the job back in the queue with ``scontrol requeue``, so it resumes by itself
    (``resume_path: auto``). SIGTERM is also what ``scancel`` sends, so it never requeues.
    Returns a line for the log, or None when there was nothing to do."""
    job = job_id()
    if job is None or signum != signal.SIGUSR1 or not trainer.slurm_requeue:
        return None
    if not slurm_detected(trainer):
        return None
    scontrol = shutil.which("scontrol")
    if scontrol is None:
        return f"SLURM job {job} not requeued: scontrol is not on PATH"
    try:
        done = subprocess.run([scontrol, "requeue", job], capture_output=True, text=True,
                              timeout=60)  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"SLURM job {job} not requeued: {err}"
    if done.returncode != 0:
        return f"SLURM job {job} not requeued: {(done.stderr or done.stdout).strip()}"
    return f"SLURM job {job} requeued: it continues from the checkpoint (resume_path: auto)"
