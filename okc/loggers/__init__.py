"""Where metrics go: CSV and JSONL files in the run folder, always; the logger the experiment
names (TensorBoard, MLflow); TensorBoard also when it is installed.

The run folder is ``logger.log_dir/experiment_name/timestamp`` (default
``~/.cache/okc/logs/<experiment name>/<%Y-%m-%d/%H-%M-%S>``; TorchOk's ``MLFlowLoggerX`` uses
``params.run_name`` instead of ``experiment_name``); the resolved experiment is saved there as
``experiment.yml``. Loggers that need a package (``tensorboard``, ``mlflow``) fail with the okc
extra to install when the experiment names them and the package is missing.
"""

from okc.loggers.files import CSVLogger, JSONLLogger
from okc.loggers.mlflow import MLFlowLogger, MLFlowLoggerX
from okc.loggers.run import RunLogger, build_run_logger, check_logger, make_run_dir
from okc.loggers.tensorboard import TensorBoardLogger

__all__ = [
    "CSVLogger", "JSONLLogger", "MLFlowLogger", "MLFlowLoggerX", "RunLogger", "TensorBoardLogger",
    "build_run_logger", "check_logger", "make_run_dir",
]  # fmt: skip
