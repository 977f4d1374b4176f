"""Several processes from one command: ``okc fit EXP trainer.devices=2`` starts them itself.

okc does what Lightning does instead of asking for a hand-typed ``torchrun`` line: when
``trainer.devices`` asks for more than one process and this process is not already one of a
group (no ``WORLD_SIZE`` in the environment, as under ``torchrun``), the API layer calls
``launch``, which runs a function in N processes through torch.distributed's elastic launcher
(``elastic_launch``, the machinery ``torchrun --standalone`` runs): a rendezvous on localhost
at a free port, one worker per device, no restarts. Each worker joins the process group as under
torchrun (``okc.engine.distributed.setup``): NCCL on GPUs, gloo on CPUs.

When one rank fails, the launcher stops the others and ``launch`` raises ``RankFailed`` with that
rank's error (its message, and its traceback unless it was a user error), so the job ends
non-zero with the cause, not with a hang. Rank 0's return value is ``launch``'s.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import threading
import traceback
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch

from okc.config.schema import Trainer
from okc.engine import cluster, rendezvous
from okc.engine.preempt import Interrupted, signal_name
from okc.errors import ConfigError, OkcError

# Seconds the launcher waits for the other ranks to stop after SIGTERM (a failed rank, Ctrl-C)
# before it kills them: enough for a rank to write last.ckpt at its next step boundary.
SHUTDOWN_TIMEOUT_S = 15
# Messages of a rank that stopped because another one died first (not the cause).
_PEER_GONE = re.compile(
    r"Connection (closed|reset) by peer|Broken pipe|DistBackendError|NCCL communicator|"
    r"Socket Timeout|recvBytes|ProcessGroupGloo|Signal \d+ \(SIGTERM\)",
    re.IGNORECASE,
)
_QUIET_LOGGERS = (
    "torch.distributed.elastic", "torch.distributed.launcher", "torch.multiprocessing",
)  # fmt: skip


class RankFailed(OkcError):
    """One process of a launched job failed; the message is that rank's error."""

    def __init__(self, message: str, *, rank: int, user_error: bool) -> None:
        super().__init__(message)
        self.rank = rank
        self.user_error = user_error
        self.exit_code = 2 if user_error else 1


def in_process_group(trainer: Trainer | None = None) -> bool:
    """Whether this process was started as one rank of a group (``torchrun``, ``launch``, or
    ``srun`` with several tasks: ``okc.engine.cluster``)."""
    return cluster.detect(trainer).distributed or "TORCHELASTIC_RUN_ID" in os.environ


def _uses_gpu(trainer: Trainer) -> bool:
    if trainer.accelerator == "cpu":
        return False
    return trainer.accelerator in ("gpu", "cuda") or torch.cuda.is_available()


def num_processes(trainer: Trainer) -> int:
    """How many processes ``trainer.devices`` asks for.

    On GPUs: ``auto`` (or ``-1``) is every visible GPU, a number N is N GPUs, a list of GPU ids
    one process per id. On a CPU: a number N is N gloo processes; ``auto`` is one (as in
    Lightning: a CPU run does not multiply itself unasked).
    """
    devices: Any = trainer.devices
    if isinstance(devices, str):
        text = devices.strip()
        devices = int(text) if re.fullmatch(r"-?\d+", text) else text
    gpu = _uses_gpu(trainer)
    if isinstance(devices, tuple):
        if not gpu:
            raise ConfigError("trainer.devices", "a list of device ids needs GPUs; on a CPU give "
                              "the number of processes, e.g. trainer.devices=2")  # fmt: skip
        return len(devices)
    if devices == "auto" or devices == -1:
        return torch.cuda.device_count() if gpu else 1
    if not isinstance(devices, int) or devices < 1:
        raise ConfigError(
            "trainer.devices", f"expected auto, a number of devices >= 1 or a list of GPU ids, "
            f"got {trainer.devices!r}",
        )  # fmt: skip
    if gpu and devices > torch.cuda.device_count():
        raise ConfigError(
            "trainer.devices", f"{devices} GPUs asked for, {torch.cuda.device_count()} visible"
        )
    return devices


def launch(
    fn: Callable[..., Any],
    args: Sequence[Any],
    *,
    num_processes: int,
    quiet: bool = True,
    forward: Sequence[str] = ("SIGUSR1",),
) -> Any:
    """``fn(*args)`` in ``num_processes`` new processes (one per device); rank 0's result.

    ``fn`` must be importable by name (the workers are spawned, not forked). ``quiet`` hides
    the launcher's own log lines (``LOGLEVEL=INFO`` in the environment shows them). The
    launcher passes SIGTERM, SIGINT, SIGHUP and SIGQUIT on to the workers itself; the other
    signals of ``forward`` (``trainer.preempt_signals``) are passed on here, so the workers stop
    with a checkpoint instead of the launcher dying alone.
    """
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    config = LaunchConfig(
        min_nodes=1, max_nodes=1, nproc_per_node=num_processes, run_id=f"okc-{uuid.uuid4()}",
        rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0,
        start_method="spawn", shutdown_timeout=SHUTDOWN_TIMEOUT_S,
    )  # fmt: skip
    threads = _threads_per_process(num_processes)
    try:
        with _quiet_launcher(quiet and "LOGLEVEL" not in os.environ), _forwarding(forward):
            results = elastic_launch(config, _worker)(fn, threads, tuple(args))
    except ChildFailedError as err:
        raise _rank_failure(err, num_processes) from None
    except SignalException as err:  # Ctrl-C or SIGTERM reached the launcher (and the workers)
        raise _interrupted(err.sigval) from None
    return results[0]


def _interrupted(signum: int) -> BaseException:
    """The launcher forwarded a signal to the workers, which stopped at their next step
    boundary with a checkpoint (``okc.engine.preempt``): say so, and exit as they did."""
    if signum == signal.SIGINT:
        return KeyboardInterrupt()
    return Interrupted(
        f"interrupted by {signal_name(signum)}: the processes saved a checkpoint at their next "
        "step boundary; rerun with resume_path=auto to continue",
        signum=signum,
    )


# --- inside each rank of a torchrun/srun job ------------------------------------------------------

_FAILURE_KEY = "okc/failure/{}"  # in the job's store; one key per torchrun round
_PEER_WAIT_S = 5.0  # how long a rank that lost its peers waits to learn why


@contextlib.contextmanager
def rank_failures(world_size: int, rank: int) -> Iterator[None]:
    """Under torchrun or srun, end this rank's log with one line naming the rank that failed
    first and its error, instead of gloo's tracebacks of the lost connections.

    The failing rank prints its traceback (not for a user error), publishes its error in the
    job's store (the c10d store at ``MASTER_ADDR:MASTER_PORT``: torchrun's agent hosts it, so it
    outlives the failing worker) and raises ``RankFailed``; a rank whose collective failed
    because a peer went away reads that error and raises the same ``RankFailed``. Jobs that
    ``launch`` started need none of it: the launcher reports the failure itself.
    """
    try:
        yield
    except (Interrupted, RankFailed, KeyboardInterrupt, SystemExit):
        raise
    except Exception as err:
        if world_size < 2 or "OKC_LAUNCHED" in os.environ:
            raise
        if threading.current_thread() is threading.main_thread():
            # the launcher now stops the other workers with SIGTERM: this one is stopping
            # already, and needs a moment (at most 2 x _PEER_WAIT_S) to say why
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise _failed_rank(err, world_size, rank) from None


def _failed_rank(err: Exception, world_size: int, rank: int) -> BaseException:
    text = f"{type(err).__name__}: {err}".strip()
    key = _FAILURE_KEY.format(rendezvous.round_id())
    store = rendezvous.agent_store(_PEER_WAIT_S)
    if _PEER_GONE.search(text):  # a peer went first: its error is the cause
        first = _read_failure(store, key)
        if first is None:
            return err
        failed, _, message = first.partition("\n")
        return RankFailed(f"rank {failed} of {world_size} failed: {message}",
                          rank=int(failed), user_error=_is_user_error(message))  # fmt: skip
    user_error = isinstance(err, OkcError)
    if not user_error:
        traceback.print_exception(err)
    if store is not None:
        with contextlib.suppress(Exception):  # first failure wins (compare_set on no key)
            store.compare_set(key, "", f"{rank}\n{text}")
    return RankFailed(f"rank {rank} of {world_size} failed: {text}", rank=rank,
                      user_error=user_error)  # fmt: skip


def _read_failure(store: Any, key: str) -> str | None:
    if store is None:
        return None
    try:
        import datetime as dt

        store.wait([key], dt.timedelta(seconds=_PEER_WAIT_S))
        return store.get(key).decode()
    except Exception:  # nobody published a failure in time
        return None


def _threads_per_process(n: int) -> int | None:
    """CPU threads per worker: the cores shared out (torchrun leaves each rank one thread);
    None when the user set ``OMP_NUM_THREADS``."""
    if "OMP_NUM_THREADS" in os.environ:
        return None
    return max(1, (os.cpu_count() or 1) // n)


def _worker(fn: Callable[..., Any], threads: int | None, args: tuple[Any, ...]) -> Any:
    """What each spawned process runs (module level, so it pickles by name)."""
    if threads is not None:
        torch.set_num_threads(threads)
    os.environ["OKC_LAUNCHED"] = "1"  # the launcher reports a failure (rank_failures)
    return fn(*args)


_HANDLED_BY_LAUNCHER = ("SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT")


@contextlib.contextmanager
def _forwarding(names: Sequence[str]) -> Iterator[None]:
    """While the workers run, the signals ``names`` (those the launcher does not handle) are
    passed on to them (they are this process's multiprocessing children)."""
    import multiprocessing

    def forward(signum: int, frame: Any) -> None:
        for child in multiprocessing.active_children():
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, signum)  # type: ignore[arg-type]

    if threading.current_thread() is not threading.main_thread():
        yield  # signals reach the main thread only
        return
    wanted = [signal.Signals[n] for n in names if n not in _HANDLED_BY_LAUNCHER]
    previous = {s: signal.signal(s, forward) for s in wanted}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


@contextlib.contextmanager
def _quiet_launcher(enabled: bool) -> Iterator[None]:
    """The launcher logs every start and stop (and each failure's traceback, which ``launch``
    re-raises anyway); keep the console to okc's own output."""
    if not enabled:
        yield
        return
    names = [n for n in logging.root.manager.loggerDict if n.startswith(_QUIET_LOGGERS)]
    loggers = [logging.getLogger(n) for n in {*names, *_QUIET_LOGGERS}]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _rank_failure(err: Any, world_size: int) -> OkcError:
    """The rank whose failure caused the others' (earliest, and not a lost-peer error); an
    ``Interrupted`` when the ranks stopped on a signal (with a checkpoint)."""
    failures = err.failures
    rank = min(
        failures,
        key=lambda r: (bool(_PEER_GONE.search(_text(failures[r]))), failures[r].timestamp, r),
    )
    failure = failures[rank]
    message, stack = _text(failure), _stack(failure)
    if message.startswith(f"{Interrupted.__name__}:"):  # a signal stopped the ranks
        text = message.partition(":")[2].strip()
        name = re.search(r"interrupted by (SIG\w+)", text)
        return Interrupted(text, signum=signal.Signals[name.group(1)] if name else signal.SIGINT)
    user_error = _is_user_error(message)
    head = f"rank {rank} of {world_size} failed"
    killed = failure.exitcode is not None and failure.exitcode < 0  # by a signal: no traceback
    body = message if killed or user_error or not stack else f"{message}\n{stack.rstrip()}"
    others = sorted(r for r in failures if r != rank)
    tail = f"\n(ranks {', '.join(map(str, others))} stopped after it)" if others else ""
    return RankFailed(f"{head}: {body}{tail}", rank=rank, user_error=user_error)


def _text(failure: Any) -> str:
    message = failure.message
    if isinstance(message, dict):
        return str(message.get("message", message))
    return str(message)


def _stack(failure: Any) -> str:
    message = failure.message
    if isinstance(message, dict):
        return str(message.get("extraInfo", {}).get("py_callstack", ""))
    return ""


def _is_user_error(message: str) -> bool:
    """Whether the rank raised an okc user error (``ConfigError: ...``): its message says it
    all, without a traceback."""
    name = message.partition(":")[0].strip()
    return name in {c.__name__ for c in _subclasses(OkcError)}


def _subclasses(cls: type) -> set[type]:
    found = {cls}
    for sub in cls.__subclasses__():
        found |= _subclasses(sub)
    return found
