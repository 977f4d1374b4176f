"""Preemption: a signal asks ``fit`` to stop; every rank stops at the same step boundary.

A cluster takes a node back by signalling the job: SLURM sends SIGTERM (and, with
``sbatch --signal=USR1@90``, SIGUSR1 before the time limit), torchrun's agent forwards SIGTERM to
its workers. The signal reaches the ranks at different moments, and a rank that stopped alone
would leave the others blocked in their next collective. So the handler only sets a flag, and
the loop asks ``Preemption.agree()`` at each optimizer-step boundary and after each validation
batch: one all-reduce of the flag (MAX, when several processes run), so every rank sees the same
answer at the same step, saves the same resumable checkpoint through the normal checkpoint path
and raises ``Interrupted``. The process then exits with ``EXIT_PREEMPTED`` (75, sysexits'
EX_TEMPFAIL: "try again later"); a Ctrl-C that stopped the same way exits with 130.

The signals are ``trainer.preempt_signals`` (default SIGTERM and SIGUSR1); Ctrl-C (SIGINT)
always stops at the next boundary, and a second Ctrl-C stops at once. A cold ``torch.compile``
cannot be cut short: the flag set during it stops the run at the end of the step that compiled.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.distributed as dist

from okc.errors import OkcError

EXIT_PREEMPTED = 75  # sysexits.h EX_TEMPFAIL: rerun the same command to continue
EXIT_CTRL_C = 130  # the shell's status for a process stopped by SIGINT
# Ctrl-C under torchrun reaches a worker twice: from the terminal and forwarded by the agent.
# Two SIGINTs this close are one press (the stop still saves); a later one stops at once.
SAME_PRESS_S = 1.0


class Interrupted(OkcError):
    """A signal stopped ``fit`` at a step boundary, after a resumable checkpoint was saved.

    ``exit_code`` is what the ``okc`` command exits with: ``EXIT_PREEMPTED`` (75) for a
    preemption signal, ``EXIT_CTRL_C`` (130) for Ctrl-C.
    """

    def __init__(self, message: str, *, signum: int = signal.SIGINT) -> None:
        super().__init__(message)
        self.signum = signum
        self.exit_code = EXIT_CTRL_C if signum == signal.SIGINT else EXIT_PREEMPTED


def signal_name(signum: int) -> str:
    """``SIGTERM`` for 15; Ctrl-C for SIGINT (what the user did, not the number)."""
    return "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name


class Preemption:
    """The stop flag of one run: set by a signal (or ``request``), agreed on by every rank.

    Args:
        signals: names of the signals that ask for a stop besides SIGINT
            (``trainer.preempt_signals``).
    """

    def __init__(self, signals: Sequence[str]) -> None:
        self.signals = [signal.SIGINT, *(signal.Signals[name] for name in signals)]
        self._event = threading.Event()
        self.signum = 0  # the first signal received here (0: none yet)
        self._requested_at = 0.0
        self._group: Any = None  # the gloo group of the agreement (built on first use)

    @property
    def requested(self) -> bool:
        """Whether this process was asked to stop (other ranks may not know yet)."""
        return self._event.is_set()

    def request(self, signum: int = signal.SIGINT) -> None:
        """Ask for a stop at the next boundary, as the signal ``signum`` does."""
        if not self._event.is_set():
            self.signum = int(signum)
            self._requested_at = time.monotonic()
            self._event.set()

    def agree(self) -> int:
        """The stop signal's number when any rank was asked to stop, else 0; the same on every
        rank. One all-reduce of one int when several processes run, none otherwise.

        The all-reduce runs on the CPU over gloo, also when training uses NCCL: reading a
        GPU tensor's value at every step would wait for the GPU, a host sync the loop keeps to
        logging steps. The ranks meet at every step anyway (DDP's gradient all-reduce).
        """
        local = self.signum if self.requested else 0
        if not (dist.is_available() and dist.is_initialized()):
            return local
        if self._group is None:  # every rank gets here at the same boundary: a collective
            gloo = dist.get_backend() == "gloo"
            self._group = dist.group.WORLD if gloo else dist.new_group(backend="gloo")
        flag = torch.tensor([local])
        dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self._group)
        return int(flag.item())

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        """The handlers of ``signals`` while the block runs (only from the main thread, where
        Python delivers signals); the previous handlers after it."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum: int, frame: Any) -> None:
            again = time.monotonic() - self._requested_at > SAME_PRESS_S
            if signum == signal.SIGINT and self.requested and again:
                raise KeyboardInterrupt  # a second Ctrl-C: stop now
            self.request(signum)

        previous = {s: signal.signal(s, handler) for s in self.signals}
        try:
            yield
        finally:
            for s, h in previous.items():
                signal.signal(s, h)
