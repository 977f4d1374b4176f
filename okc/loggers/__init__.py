"""Where metrics go: CSV and JSONL files in the run folder, always; TensorBoard when installed.

The run folder is ``logger.log_dir/experiment_name/timestamp`` (default
``~/.cache/okc/logs/<experiment name>/<%Y-%m-%d/%H-%M-%S>``); the resolved experiment is saved there
as ``experiment.yml``. The ``logger`` section's ``name`` picks TorchOk's logger class names:
``CSVLogger`` and ``JSONLLogger`` are always on, ``TensorBoardLogger`` additionally requires the
``tensorboard`` package.
"""

from okc.loggers.files import CSVLogger, JSONLLogger
from okc.loggers.run import RunLogger, build_run_logger, make_run_dir
from okc.loggers.tensorboard import TensorBoardLogger

__all__ = [
    "CSVLogger", "JSONLLogger", "RunLogger", "TensorBoardLogger", "build_run_logger",
    "make_run_dir",
]  # fmt: skip
