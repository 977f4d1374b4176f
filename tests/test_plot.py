"""``okc plot`` (PNG curves, runs overlaid) and the summary ``okc fit`` prints at the end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

import okc
from okc.cli import main
from okc.errors import OkcError
from okc.loggers.files import CSVLogger, JSONLLogger
from okc.reports.history import find_runs, read_run, read_runs
from okc.reports.plot import panel_of, panels, plot_runs
from okc.reports.summary import summarize

EXPERIMENT = {
    "joint_loss": {"losses": [{"name": "CrossEntropyLoss", "tag": "ce"}]},
    "metrics": [
        {"name": "Accuracy", "params": {"task": "multiclass", "num_classes": 4}},
        {"name": "MeanSquaredError", "tag": "mse"},
    ],
}


def write_run(run_dir: Path, *, offset: float = 0.0, status: str = "FINISHED") -> Path:
    """A run folder as okc's own loggers write it: 2 epochs of 4 steps."""
    run_dir.mkdir(parents=True)
    (run_dir / "experiment.yml").write_text(yaml.safe_dump(EXPERIMENT))
    sinks = [JSONLLogger(run_dir=run_dir), CSVLogger(run_dir=run_dir)]
    for epoch in range(2):
        for step in range(epoch * 4 + 1, epoch * 4 + 5):
            for sink in sinks:
                sink.log({"train/loss_step": 2.0 - 0.1 * step + offset,
                          "lr-AdamW": 0.01 / step}, step=step, epoch=epoch)  # fmt: skip
        values = {"train/loss": 1.5 - epoch * 0.3 + offset, "valid/loss": [1.2, 1.3][epoch],
                  "valid/Accuracy": [0.6, 0.5][epoch], "valid/mse": [0.4, 0.3][epoch],
                  "valid/ce": [1.2, 1.3][epoch]}  # fmt: skip
        for sink in sinks:
            sink.log(values, step=epoch * 4 + 4, epoch=epoch)
    for sink in sinks:
        sink.close(status)
    return run_dir


def test_jsonl_and_csv_read_alike(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run")
    from_jsonl = read_run(run)
    (run / "metrics.jsonl").unlink()
    from_csv = read_run(run)
    assert from_jsonl.series == from_csv.series
    assert from_jsonl.series["valid/Accuracy"] == [(4, 0.6), (8, 0.5)]
    assert len(from_jsonl.series["train/loss_step"]) == 8
    assert (from_jsonl.status, from_csv.status) == ("FINISHED", None)  # the CSV has no status


def test_a_run_cut_mid_line_still_reads(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run")
    with (run / "metrics.jsonl").open("a") as f:
        f.write('{"epoch": 2, "step": 9, "train/loss_st')  # killed while writing
    assert read_run(run).series["train/loss_step"][-1] == (8, pytest.approx(1.2))


def test_panels_group_phases_and_put_lr_last(tmp_path: Path) -> None:
    assert panel_of("valid/Accuracy_dataloader_1") == "Accuracy"
    assert panel_of("train/loss_step") == "loss"
    assert panel_of("lr-AdamW/pg2") == "learning rate"
    run = read_run(write_run(tmp_path / "run"))
    assert panels([run]) == ["loss", "Accuracy", "ce", "mse", "learning rate"]


def _has_colour(png: Path, rgb: tuple[int, int, int]) -> bool:
    from matplotlib.image import imread

    pixels = (imread(png)[..., :3] * 255).round()
    return bool((np.abs(pixels - np.array(rgb)).max(axis=-1) <= 2).any())


def test_plot_overlays_runs_in_their_colours(tmp_path: Path) -> None:
    write_run(tmp_path / "logs" / "exp" / "a")
    write_run(tmp_path / "logs" / "exp" / "b", offset=0.5, status="FAILED")
    runs = read_runs([tmp_path / "logs"])  # a folder above runs: every run below it
    assert [r.label for r in runs] == ["a", "b"]
    assert [r.status for r in runs] == ["FINISHED", "FAILED"]
    png = okc.plot(tmp_path / "logs")
    assert png == (tmp_path / "logs" / "exp" / "curves.png").resolve()  # where the runs meet
    from matplotlib.image import imread

    height, width = imread(png).shape[:2]
    assert (width, height) == (1560, 720)  # 5 panels: 3 columns x 2 rows of 520x360
    assert _has_colour(png, (31, 119, 180)) and _has_colour(png, (255, 127, 14))  # C0 and C1


def test_one_run_is_drawn_into_its_folder(tmp_path: Path, capsys) -> None:
    run = write_run(tmp_path / "run")
    assert main(["plot", str(run)]) == 0
    assert capsys.readouterr().out.strip() == f"curves written to {run / 'curves.png'}"
    assert _has_colour(run / "curves.png", (31, 119, 180))
    assert not _has_colour(run / "curves.png", (255, 127, 14))  # one run, one colour
    out = tmp_path / "elsewhere" / "c.png"
    assert main(["plot", str(run / "metrics.jsonl"), "--output", str(out)]) == 0
    assert out.is_file()


def test_plot_errors_name_the_folder(tmp_path: Path, capsys) -> None:
    assert main(["plot", str(tmp_path / "nope")]) == 2
    assert f"{tmp_path / 'nope'}: not a run folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    with pytest.raises(OkcError, match="no run below it"):
        find_runs([tmp_path / "empty"])
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "metrics.jsonl").write_text("")
    with pytest.raises(OkcError, match="nothing to plot"):
        plot_runs(read_runs([tmp_path / "new"]), tmp_path / "x.png")


def test_summary_knows_which_way_is_better(tmp_path: Path) -> None:
    rows = {r.key: r for r in summarize(read_run(write_run(tmp_path / "run")))}
    assert "train/loss_step" not in rows  # per-step values are not summarized
    assert (rows["valid/loss"].best, rows["valid/loss"].best_step, rows["valid/loss"].last) == (
        1.2, 4, 1.3,
    )  # fmt: skip
    # Accuracy (a torchmetrics task wrapper): higher is better; mse: lower; a loss tag: lower
    assert (rows["valid/Accuracy"].mode, rows["valid/Accuracy"].best) == ("max", 0.6)
    assert (rows["valid/mse"].mode, rows["valid/mse"].best) == ("min", 0.3)
    assert rows["valid/ce"].mode == "min"
    assert rows["lr-AdamW"].best is None and rows["lr-AdamW"].last == pytest.approx(0.01 / 8)


def test_fit_prints_a_summary_table(tiny_exp, tmp_path: Path, capsys) -> None:
    path = tmp_path / "tiny.yml"
    path.write_text(yaml.safe_dump(tiny_exp().to_dict()))
    assert main(["fit", str(path), "trainer.max_epochs=2"]) == 0
    out = capsys.readouterr().out
    assert "2 epochs, 16 steps in" in out
    row = next(line for line in out.splitlines() if "valid/Accuracy" in line)
    run_dir = Path(out.split("run folder:")[1].split()[0])
    accuracy = [v for _, v in read_run(run_dir).series["valid/Accuracy"]]
    assert f"{accuracy[-1]:.4g}" in row and f"{max(accuracy):.4g} (max)" in row
    assert "lr-AdamW" in out  # the learning rate is logged by default


def test_best_and_last_name_the_latest_runs_checkpoints(tiny_exp, tmp_path: Path) -> None:
    from okc.reports.runs import experiment_runs, resolve_checkpoint

    monitor = "+callbacks=[{name: ModelCheckpoint, params: {monitor: valid/Accuracy, mode: max, save_last: true}}]"
    exp = tiny_exp(monitor)
    with pytest.raises(OkcError, match="no run of experiment 'tiny' with a checkpoint in .* yet"):
        resolve_checkpoint(exp, "best")
    okc.fit(tiny_exp(monitor, "trainer.max_steps=2"))
    latest = okc.fit(tiny_exp(monitor, "trainer.max_epochs=2"))
    assert experiment_runs(exp)[-1] == latest.run_dir and len(experiment_runs(exp)) == 2
    assert resolve_checkpoint(exp, "best") == latest.best_checkpoint
    assert resolve_checkpoint(exp, "last") == latest.last_checkpoint
    assert resolve_checkpoint(exp, None) is None
    assert resolve_checkpoint(exp, tmp_path / "x.ckpt") == tmp_path / "x.ckpt"
    metrics = okc.validate(exp, checkpoint="best")
    best_logged = max(v for _, v in read_run(latest.run_dir).series["valid/Accuracy"])
    assert metrics["valid/Accuracy"] == pytest.approx(best_logged)  # the best weights
    experiment_file = tmp_path / "tiny.yml"
    experiment_file.write_text(yaml.safe_dump(exp.to_dict()))
    # its latest run that trained (okc.validate above wrote a run folder too)
    assert okc.plot(experiment_file) == latest.run_dir / "curves.png"
