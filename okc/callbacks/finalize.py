"""``FinalizeLogger``: a run that ends with an error is recorded as FAILED (KILLED for Ctrl-C or
SIGTERM), not as finished.

TorchOk's callback finalized its logger on an exception (Lightning did not). okc's loop always
closes the loggers after ``teardown``; this callback tells them how the run ended
(``RunView.set_status``): MLflow gets the run status FAILED/KILLED (MLFlowLoggerX still uploads
the checkpoints written so far), metrics.jsonl ends with ``{"status": "FAILED"}``, TensorBoard gets
the text ``status``. okc adds it to every run, so listing it in an experiment changes nothing.
"""

from __future__ import annotations

from okc.engine.hooks import Callback, RunView
from okc.registry import CALLBACKS


def status_for(error: BaseException) -> str:
    """MLflow's vocabulary: a user's interrupt kills the run; anything else fails it."""
    return "KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED"


@CALLBACKS.register
class FinalizeLogger(Callback):
    main_process_only = True  # only the main process has loggers

    def on_interrupt(self, run: RunView) -> None:
        run.set_status("KILLED")

    def on_exception(self, run: RunView, error: BaseException) -> None:
        run.set_status(status_for(error))
