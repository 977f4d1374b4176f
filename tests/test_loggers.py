"""Loggers as a user meets them: files read back, TensorBoard events read back with
tensorboard's own reader, MLflow runs read back from a local SQLite store, the status of a run that
failed or was interrupted, and the errors for a logger whose package is missing."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

import okc
from okc.callbacks.defaults import build_callbacks
from okc.engine.hooks import Callback, RunView
from okc.engine.loop import Interrupted, Loop
from okc.errors import ConfigError, ConfigErrors

FAST = ("trainer.max_steps=4", "trainer.max_epochs=1", "trainer.log_every_n_steps=1")


def run_folder(tmp_path: Path) -> Path:
    (folder,) = {p.parent for p in (tmp_path / "logs").rglob("metrics.jsonl")}
    return folder


def jsonl(folder: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


class FailAt(Callback):
    """Raises (or interrupts the loop) after optimizer step ``step``."""

    def __init__(self, step: int, *, interrupt: Loop | None = None) -> None:
        self.step = step
        self.interrupt = interrupt

    def on_train_batch_end(self, run: RunView, logs: Mapping[str, float] | None) -> None:
        if run.global_step == self.step:
            if self.interrupt is not None:
                self.interrupt.request_interrupt()
            else:
                raise RuntimeError("boom")


def fit_with(exp: okc.Experiment, *extra: Callback) -> Loop:
    loop = Loop(exp, callbacks=[*build_callbacks(exp, "fit"), *extra])
    loop.fit()
    return loop


# --- files and status -----------------------------------------------------------------------------


def test_jsonl_ends_with_the_run_status(tiny_exp, tmp_path: Path) -> None:
    okc.fit(tiny_exp(*FAST))
    records = jsonl(run_folder(tmp_path))
    assert records[-1] == {"epoch": 0, "step": 4, "status": "FINISHED"}
    assert any("train/loss_step" in r for r in records[:-1])


def test_a_failed_run_is_recorded_as_failed(tiny_exp, tmp_path: Path) -> None:
    exp = tiny_exp(*FAST)
    with pytest.raises(RuntimeError, match="boom"):
        fit_with(exp, FailAt(2))
    assert jsonl(run_folder(tmp_path))[-1] == {"epoch": 0, "step": 2, "status": "FAILED"}


def test_an_interrupted_run_is_recorded_as_killed(tiny_exp, tmp_path: Path) -> None:
    exp = tiny_exp(*FAST)
    loop = Loop(exp, callbacks=build_callbacks(exp, "fit"))
    loop.callbacks.append(FailAt(1, interrupt=loop))
    with pytest.raises(Interrupted):
        loop.fit()
    folder = run_folder(tmp_path)
    assert jsonl(folder)[-1]["status"] == "KILLED"
    assert (folder / "checkpoints" / "last.ckpt").is_file()  # saved before the loggers closed


def test_finalize_logger_in_the_experiment_is_the_default_one(tiny_exp) -> None:
    exp = tiny_exp("+callbacks=[{name: FinalizeLogger}]")
    names = [type(c).__name__ for c in build_callbacks(exp, "fit")]
    assert names.count("FinalizeLogger") == 1


# --- TensorBoard ------------------------------------------------------------------------------------


def read_events(folder: Path) -> Any:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def text(acc: Any, tag: str) -> str:
    (event,) = acc.Tensors(f"{tag}/text_summary")
    return event.tensor_proto.string_val[0].decode()


def test_tensorboard_events_read_back(tiny_exp, tmp_path: Path) -> None:
    exp = tiny_exp(*FAST, "logger.name=TensorBoardLogger", "+logger.params={prefix: tiny}")
    okc.fit(exp)
    acc = read_events(run_folder(tmp_path) / "tensorboard")
    steps = [e.step for e in acc.Scalars("tiny-train/loss_step")]
    assert steps == [1, 2, 3, 4]
    csv_losses = [
        r["train/loss_step"] for r in jsonl(run_folder(tmp_path)) if "train/loss_step" in r
    ]
    assert [e.value for e in acc.Scalars("tiny-train/loss_step")] == pytest.approx(csv_losses)
    assert "valid/Accuracy" in {t.removeprefix("tiny-") for t in acc.Tags()["scalars"]}
    assert text(acc, "status") == "FINISHED"
    assert "ClassificationTask" in text(acc, "experiment")


def test_tensorboard_rejects_params_it_does_not_implement(tiny_exp) -> None:
    exp = tiny_exp("logger.name=TensorBoardLogger", "+logger.params={log_graph: true}")
    (error,) = okc.check(exp)
    assert str(error).startswith("logger.params.log_graph: TensorBoardLogger has no parameter")


def test_a_named_logger_without_its_package_is_an_error(
    tiny_exp, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # as if it were not installed
    exp = tiny_exp(*FAST, "logger.name=TensorBoardLogger")
    (error,) = okc.check(exp)
    assert str(error) == (
        "logger.name: TensorBoardLogger needs the tensorboard package, which is not installed: "
        "pip install 'okc[tensorboard]'"
    )
    with pytest.raises(ConfigErrors, match=r"okc\[tensorboard\]"):
        okc.fit(exp)
    okc.fit(tiny_exp(*FAST))  # not asked for by name: the run goes on with CSV and JSONL


# --- MLflow -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tracking_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One SQLite store for the module: creating its tables takes seconds."""
    pytest.importorskip("mlflow")
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


def mlflow_runs(uri: str, experiment: str) -> list[Any]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(experiment)
    assert found is not None, f"no MLflow experiment {experiment}"
    return client.search_runs([found.experiment_id])


def mlflow_exp(tiny_exp, uri: str, name: str, *overrides: str, tmp_path: Path) -> okc.Experiment:
    return tiny_exp(
        *FAST, "logger.name=MLFlowLoggerX", f"logger.experiment_name={name}",
        f"+logger.params={{run_name: r1, tracking_uri: '{uri}', "
        f"artifact_location: '{tmp_path / 'artifacts'}'}}",
        *overrides,
    )  # fmt: skip


def test_mlflow_logger_x_run_reads_back(tiny_exp, tracking_uri: str, tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    result = okc.fit(mlflow_exp(tiny_exp, tracking_uri, "x-ok", tmp_path=tmp_path))
    assert result.run_dir.parents[1].name == "r1"  # TorchOk: log_dir/run_name/<date>/<time>
    (run,) = mlflow_runs(tracking_uri, "x-ok")
    assert run.info.status == "FINISHED" and run.info.run_name == "r1"
    client = MlflowClient(tracking_uri=tracking_uri)
    history = client.get_metric_history(run.info.run_id, "train/loss_step")
    assert [m.step for m in history] == [1, 2, 3, 4]
    assert "valid/Accuracy" in run.data.metrics
    assert run.data.params["task.name"] == "ClassificationTask"
    assert run.data.params["task.params.head_params.num_classes"] == "4"
    files = {a.path for a in client.list_artifacts(run.info.run_id, "checkpoints")}
    assert "checkpoints/last.ckpt" in files
    assert run.info.artifact_uri.startswith(str(tmp_path / "artifacts"))


def test_mlflow_records_a_failed_run_and_still_uploads(
    tiny_exp, tracking_uri: str, tmp_path: Path
) -> None:
    from mlflow.tracking import MlflowClient

    exp = mlflow_exp(tiny_exp, tracking_uri, "x-fail", "+callbacks=[{name: ModelCheckpoint, "
                     "params: {every_n_train_steps: 1, save_last: true}}]", tmp_path=tmp_path)  # fmt: skip
    with pytest.raises(RuntimeError, match="boom"):
        fit_with(exp, FailAt(2))
    (run,) = mlflow_runs(tracking_uri, "x-fail")
    assert run.info.status == "FAILED"
    client = MlflowClient(tracking_uri=tracking_uri)
    assert {a.path for a in client.list_artifacts(run.info.run_id, "checkpoints")} >= {
        "checkpoints/last.ckpt"
    }


def test_plain_mlflow_logger_uploads_nothing_by_default(
    tiny_exp, tracking_uri: str, tmp_path: Path
) -> None:
    from mlflow.tracking import MlflowClient

    exp = tiny_exp(*FAST, "logger.name=MLFlowLogger", "logger.experiment_name=plain",
                   f"+logger.params={{tracking_uri: '{tracking_uri}', tags: {{team: cv}}}}")  # fmt: skip
    result = okc.fit(exp)
    assert result.run_dir.parents[1].name == "plain"
    (run,) = mlflow_runs(tracking_uri, "plain")
    assert run.info.status == "FINISHED" and run.data.tags["team"] == "cv"
    assert MlflowClient(tracking_uri=tracking_uri).list_artifacts(run.info.run_id) == []


def test_mlflow_default_store_is_beside_the_runs(
    tiny_exp, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("mlflow")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    okc.fit(tiny_exp(*FAST, "logger.name=MLFlowLogger"))
    db = tmp_path / "logs" / "mlflow.db"
    (run,) = mlflow_runs(f"sqlite:///{db}", "tiny")
    assert run.info.status == "FINISHED"


def test_mlflow_errors_name_the_key(tiny_exp, tmp_path: Path, monkeypatch) -> None:
    pytest.importorskip("mlflow")
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    exp = tiny_exp(*FAST, "logger.name=MLFlowLogger",
                   f"+logger.params={{tracking_uri: 'file:{tmp_path / 'mlruns'}'}}")  # fmt: skip
    with pytest.raises(ConfigError, match=r"^logger\.params\.tracking_uri: MLflow: .*file"):
        okc.fit(exp)


def test_check_reports_a_missing_mlflow(tiny_exp, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if it were not installed
    errors = [str(e) for e in okc.check(tiny_exp("logger.name=MLFlowLoggerX"))]
    assert errors == [
        "logger.name: MLFlowLoggerX needs the mlflow package, which is not installed: "
        "pip install 'okc[mlflow]'"
    ]


def test_check_binds_mlflow_params(tiny_exp) -> None:
    errors = [str(e) for e in okc.check(tiny_exp("logger.name=MLFlowLoggerX",
                                                 "+logger.params={run_nme: x}"))]  # fmt: skip
    assert errors == [
        "logger.params.run_nme: MLFlowLoggerX has no parameter 'run_nme', did you mean 'run_name'?"
    ]
