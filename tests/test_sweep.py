"""Sweeps (``okc fit EXP -m ...``): Hydra's sweep syntax, and a real 4-run sweep on Shapes in
which one run fails and the others still finish, ranked in the table."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import yaml
from conftest import TINY_EXPERIMENT

from okc.cli import main
from okc.errors import ConfigError
from okc.reports.history import read_runs
from okc.reports.plot import sweep_labelled
from okc.sweep import expand, split_top_level

LR = "optimization.0.optimizer.params.lr"


def test_the_grid_is_the_product_last_key_fastest() -> None:
    common, grid = expand(["a=1,2", "trainer.max_epochs=3", "+b=x,y"])
    assert common == ["trainer.max_epochs=3"]
    assert grid == [["a=1", "+b=x"], ["a=1", "+b=y"], ["a=2", "+b=x"], ["a=2", "+b=y"]]


@pytest.mark.parametrize(
    ("override", "values"),
    [
        ("k='a,b',c", ["k='a,b'", "k=c"]),  # quotes keep a comma in a value
        ('k="x,y"', None),  # one quoted value: no sweep
        ("k=[1,2],[3]", ["k=[1,2]", "k=[3]"]),  # brackets keep a list whole
        ("k=[1,2]", None),  # a list, not a sweep
        ("k={a: 1, b: 2}", None),
        (r"k=a\,b,c", ["k=a,b", "k=c"]),  # an escaped comma
        ("k=range(3)", ["k=0", "k=1", "k=2"]),
        ("k=range(1,7,2)", ["k=1", "k=3", "k=5"]),
        ("k=range(0,1,0.25)", ["k=0.0", "k=0.25", "k=0.5", "k=0.75"]),
        ("k=choice(adam, 'sgd,2')", ["k=adam", "k='sgd,2'"]),
        ("~k", None),
    ],
)
def test_hydra_sweep_syntax(override: str, values: list[str] | None) -> None:
    common, grid = expand([override])
    if values is None:
        assert common == [override] and grid == [[]]
    else:
        assert common == [] and [run for (run,) in grid] == values


@pytest.mark.parametrize(
    ("override", "message"),
    [("k='a,b", "unbalanced"), ("k=[1,2", "unbalanced"), ("k=range(a,b)", r"range\(\) takes"),
     ("k=range(1,2,0)", "step must not be 0"), ("k=range(3,1)", "lists no value")],
)  # fmt: skip
def test_bad_sweeps_name_the_override(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        expand([override])
    assert override in str(err.value)


def test_split_keeps_nesting() -> None:
    assert split_top_level("f(a,[b,c]),{d: e}", where="x") == ["f(a,[b,c])", "{d: e}"]


@pytest.mark.slow
def test_a_four_run_sweep_with_one_failing_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = yaml.safe_load(TINY_EXPERIMENT)
    data["logger"] = {"log_dir": str(tmp_path / "logs"), "experiment_name": "tiny"}
    data["callbacks"] = [
        {"name": "ModelCheckpoint", "params": {"monitor": "valid/loss", "mode": "min"}}
    ]
    path = tmp_path / "tiny.yml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    # lr=-1 passes `okc check` (a float) and fails when AdamW is built: a run-time failure
    code = main(["fit", str(path), "-m", f"{LR}=0.01,0.003,-1,0.001", "trainer.max_epochs=1",
                 "trainer.limit_train_batches=2", "trainer.compile=false"])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 1  # a run failed: said by the exit status, after the table
    assert "sweep: 4 runs, ranked by valid/loss" in out
    (table,) = (tmp_path / "logs" / "tiny" / "multirun").rglob("sweep.csv")
    rows = list(csv.DictReader(table.open(encoding="utf-8")))
    assert [(r["run"], r[LR], r["status"]) for r in rows][3:] == [("2", "-1", "failed")]
    assert "learning rate" in rows[3]["error"].lower()  # AdamW's own message, from the run
    finished = rows[:3]
    assert {r[LR] for r in finished} == {"0.01", "0.003", "0.001"}
    assert all(r["status"] == "finished" and r["error"] == "" for r in finished)
    losses = [float(r["valid/loss"]) for r in finished]
    assert losses == sorted(losses)  # ranked: the lowest validation loss first
    for row in finished:
        run_dir = Path(row["run_dir"])
        assert run_dir.parent == table.parent
        logged = yaml.safe_load((run_dir / "experiment.yml").read_text(encoding="utf-8"))
        assert logged["optimization"][0]["optimizer"]["params"]["lr"] == float(row[LR])
        assert any(run_dir.rglob("*.ckpt"))
        assert row["best_epoch"] == "0"
    labels = {r.label for r in sweep_labelled(read_runs([table.parent]))}
    assert {f"#{r['run']} lr={r[LR]}" for r in finished} <= labels
    assert main(["plot", str(table.parent)]) == 0  # the runs overlaid, the failed one too
    assert (table.parent / "curves.png").stat().st_size > 10_000


def test_only_training_sweeps(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "tiny.yml"
    path.write_text(TINY_EXPERIMENT.replace("seed_params:", "mode: test\nseed_params:"))
    assert main(["run", str(path), "--multirun", f"{LR}=0.1,0.2"]) == 2
    assert "sweeps training runs only" in capsys.readouterr().err
