"""MLflow runs (the ``mlflow`` package: ``pip install 'okc[mlflow]'``).

``MLFlowLogger`` takes Lightning's parameters; ``MLFlowLoggerX`` is TorchOk's variant, which also
uploads the run's checkpoints (``*.ckpt``) and ONNX files (``*.onnx``) as artifacts when the run
ends, including a run that failed or was killed.

Where a run goes: ``tracking_uri`` (a server ``http://...``, a database ``sqlite:///x.db`` /
``postgresql://...``), else the ``MLFLOW_TRACKING_URI`` environment variable, else the SQLite
database ``<logger.log_dir>/mlflow.db`` (MLflow 3 refuses its old ``file:`` store unless
``MLFLOW_ALLOW_FILE_STORE=true``; Lightning's default was that store inside the run folder).
Artifacts go to ``artifact_location``, else where the tracking server or store puts them; for a
SQLite store, ``mlartifacts`` beside the database's default place, ``<logger.log_dir>``.

The experiment and the connection are checked when the logger is built, so a wrong URI fails
before training; the MLflow run itself starts with the first logged value, so a run that fails
while being set up leaves no run behind. Closing records how the run ended (FINISHED, FAILED or
KILLED) as the MLflow run's status.
"""

from __future__ import annotations

import contextlib
import os
import time
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from okc.errors import OkcError, ParamError, at
from okc.loggers.packages import require
from okc.registry import LOGGERS

STATUSES = ("FINISHED", "FAILED", "KILLED")
ARTIFACT_PATTERNS = ("*.ckpt", "*.onnx")


def flatten(data: Any, prefix: str = "") -> Iterator[tuple[str, str]]:
    """``{"a": {"b": [1, 2]}}`` → ``("a.b.0", "1"), ("a.b.1", "2")``: MLflow params are flat."""
    if isinstance(data, Mapping):
        for key, value in data.items():
            yield from flatten(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(data, (list, tuple)) and data:
        for i, value in enumerate(data):
            yield from flatten(value, f"{prefix}.{i}" if prefix else str(i))
    else:
        yield prefix, "null" if data is None else str(data)


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


@contextlib.contextmanager
def _mlflow_errors(key: str) -> Iterator[None]:
    """MLflow's exceptions (a bad URI, a refused store, an unknown run id) as errors at ``key``
    of the logger's params."""
    from mlflow.exceptions import MlflowException

    try:
        yield
    except MlflowException as err:
        message = str(err).split(". See ")[0]  # without the link to MLflow's docs
        raise ParamError(key, f"MLflow: {message}") from err


@LOGGERS.register
class MLFlowLogger:
    """Metrics (per step), the experiment (as flattened params) and the run's status to MLflow."""

    #: upload checkpoints and ONNX files when the run ends (MLFlowLoggerX: yes)
    default_log_model = False

    def __init__(
        self,
        *,
        run_dir: Path,
        log_dir: str | Path | None = None,
        experiment_name: str = "default",
        run_name: str | None = None,
        tracking_uri: str | None = None,
        tags: Mapping[str, Any] | None = None,
        artifact_location: str | None = None,
        prefix: str = "",
        run_id: str | None = None,
        log_model: bool | None = None,
        hyperparams: Mapping[str, Any] | None = None,
    ) -> None:
        require("mlflow", what=type(self).__name__)
        self.run_dir = Path(run_dir)
        root = Path(log_dir if log_dir is not None else run_dir).expanduser().resolve()
        default_uri = f"sqlite:///{root / 'mlflow.db'}"
        self.tracking_uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or default_uri
        if artifact_location is None and self.tracking_uri.startswith("sqlite:"):
            # MLflow would put them in ./mlartifacts of whatever folder the run started in
            artifact_location = str(root / "mlartifacts")
        self.experiment_name = experiment_name
        self.run_name, self.run_id = run_name, run_id
        self.tags = {str(k): str(v) for k, v in (tags or {}).items()}
        self.prefix = prefix
        self.log_model = self.default_log_model if log_model is None else log_model
        self.hyperparams = dict(hyperparams or {})
        self._active: str | None = None  # the MLflow run, once started
        self._closed = False
        self._client, self.experiment_id = self._connect(artifact_location)

    def _connect(self, artifact_location: str | None) -> tuple[Any, str]:
        from mlflow.tracking import MlflowClient

        with _mlflow_errors("tracking_uri"):
            client = MlflowClient(tracking_uri=self.tracking_uri)
            found = client.get_experiment_by_name(self.experiment_name)
            if found is not None:
                return client, found.experiment_id
            return client, client.create_experiment(
                self.experiment_name, artifact_location=artifact_location
            )

    # --- the run ----------------------------------------------------------------------------------

    def _run(self) -> str:
        """The MLflow run's id, starting the run (and logging the params) on first use."""
        if self._active is not None:
            return self._active
        with at("logger.params"), _mlflow_errors("run_id" if self.run_id else "tracking_uri"):
            if self.run_id is not None:
                self._active = self._client.get_run(self.run_id).info.run_id  # resume it
            else:
                run = self._client.create_run(
                    self.experiment_id, run_name=self.run_name, tags=self.tags or None
                )
                self._active = run.info.run_id
        self._log_params()
        return self._active

    def _log_params(self) -> None:
        from mlflow.entities import Param
        from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH, MAX_PARAMS_TAGS_PER_BATCH

        params, skipped = [], []
        for key, value in flatten(self.hyperparams):
            if len(value) > MAX_PARAM_VAL_LENGTH:
                skipped.append(key)
            else:
                params.append(Param(key, value))
        if skipped:
            warnings.warn(
                f"MLflow takes params of at most {MAX_PARAM_VAL_LENGTH} characters; not logged: "
                f"{', '.join(skipped)}",
                stacklevel=3,
            )
        for chunk in _chunks(params, MAX_PARAMS_TAGS_PER_BATCH):
            self._client.log_batch(self._active, params=chunk)

    def log(self, metrics: Mapping[str, float], *, step: int, epoch: int) -> None:
        from mlflow.entities import Metric
        from mlflow.utils.validation import MAX_METRICS_PER_BATCH

        run_id = self._run()
        now = int(time.time() * 1000)
        entries = [
            Metric(f"{self.prefix}-{k}" if self.prefix else k, float(v), now, step)
            for k, v in metrics.items()
        ]
        for chunk in _chunks(entries, MAX_METRICS_PER_BATCH):
            self._client.log_batch(run_id, metrics=chunk)

    def artifacts(self) -> list[Path]:
        """The checkpoints and ONNX files in the run folder (what ``log_model`` uploads)."""
        return sorted({p for pattern in ARTIFACT_PATTERNS for p in self.run_dir.rglob(pattern)})

    def close(self, status: str = "FINISHED") -> None:
        if self._closed:
            return
        self._closed = True
        if status not in STATUSES:
            raise OkcError(f"unknown run status {status!r}; expected one of {STATUSES}")
        run_id = self._run()
        if self.log_model:
            for path in self.artifacts():
                folder = path.parent.relative_to(self.run_dir).as_posix()
                self._client.log_artifact(run_id, str(path), None if folder == "." else folder)
        self._client.set_terminated(run_id, status)


@LOGGERS.register
class MLFlowLoggerX(MLFlowLogger):
    """TorchOk's MLflow logger: ``MLFlowLogger`` that uploads ``*.ckpt`` and ``*.onnx`` of the
    run folder when the run ends (TorchOk: ``finalize``); its run folder is
    ``log_dir/<params.run_name>/timestamp`` as in TorchOk."""

    default_log_model = True
