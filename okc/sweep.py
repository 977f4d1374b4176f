"""Sweeps: ``okc fit EXP -m key=a,b key2=c,d`` runs the grid of overrides, one run after another.

Hydra's multirun syntax, as TorchOk's users know it: ``key=a,b,c`` (a comma list), quotes keep a
comma inside a value (``key='a,b'``), brackets keep a list whole (``key=[1,2],[3,4]`` is two
values), ``key=range(start,stop[,step])`` and ``key=choice(a,b)``. Overrides without a sweep apply
to every run. The grid is the product of the swept values, the last key varying fastest.

Each run is a child process running ``okc fit`` (``python -m okc``) with its overrides: a crash,
a CUDA out-of-memory or a hung data worker in one run cannot take the sweep (or the next run's
CUDA context, compile caches, RNG, threads) with it, and a run does exactly what the same
``okc fit`` command would. It costs one interpreter start per run (a few seconds against minutes
of training). A run that exits non-zero is recorded with its error and the sweep goes on.

The runs' folders sit under one sweep folder, ``<log_dir>/<experiment>/multirun/<date>/<time>/<n>``
(the run folder's ``logger.timestamp`` is set to ``multirun/<date>/<time>/<n>``), each holding its
resolved experiment, logs, checkpoints, ``okc.log`` (the run's output) and ``overrides.yml``. At
the end the table of runs (overrides, the monitored metric at its best, best epoch, time,
status) is sorted by the ``ModelCheckpoint``/``EarlyStopping`` monitor in its mode, printed and
saved as ``sweep.csv`` in the sweep folder. ``okc plot SWEEP_FOLDER`` overlays the runs.
"""

from __future__ import annotations

import csv
import datetime as dt
import itertools
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import attrs
import yaml

from okc.config.load import load_experiment
from okc.errors import ConfigError, OkcError
from okc.loggers.run import logger_spec
from okc.reports.plot import SWEEP_OVERRIDES
from okc.reports.runs import experiment_log_dir

Mode = Literal["min", "max"]
MONITORED = ("ModelCheckpoint", "EarlyStopping")
FALLBACK_MONITOR = ("valid/loss", "min")  # no callback names one: the validation loss
TABLE_FILE = "sweep.csv"
_PAIRS = {"[": "]", "{": "}", "(": ")"}


# --- Hydra's sweep syntax --------------------------------------------------------------------


def split_top_level(text: str, *, where: str) -> list[str]:
    """``text`` cut at the commas outside quotes and brackets (``\\,`` is a literal comma)."""
    parts, current, closers, quote = [], [], [], ""
    chars = iter(text)
    for ch in chars:
        if ch == "\\" and not quote:
            current.append(next(chars, ""))
            continue
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in _PAIRS:
            closers.append(_PAIRS[ch])
        elif closers and ch == closers[-1]:
            closers.pop()
        elif ch == "," and not closers:
            parts.append("".join(current).strip())
            current = []
            continue
        current.append(ch)
    if quote or closers:
        raise ConfigError(where, f"unbalanced {quote or closers[-1]!r} in '{text}'")
    parts.append("".join(current).strip())
    return parts


def sweep_values(text: str, *, where: str) -> list[str] | None:
    """The values a sweep override's right side lists, as override text; None: not a sweep."""
    for name in ("range", "choice"):
        if text.startswith(f"{name}(") and text.endswith(")"):
            args = split_top_level(text[len(name) + 1 : -1], where=where)
            return _range(args, where=where) if name == "range" else args
    if text[:1] in "[{" and len(split_top_level(text, where=where)) == 1:
        return None  # a list or a mapping: one value
    values = split_top_level(text, where=where)
    return values if len(values) > 1 else None


def _range(args: list[str], *, where: str) -> list[str]:
    """Hydra's ``range(stop)``, ``range(start, stop)``, ``range(start, stop, step)``; floats too."""
    try:
        numbers = [yaml.safe_load(a) for a in args]
        if not 1 <= len(numbers) <= 3 or not all(isinstance(n, int | float) for n in numbers):
            raise ValueError
    except (ValueError, yaml.YAMLError):
        raise ConfigError(where, "range() takes 1 to 3 numbers: range(start, stop, step)") from None
    if len(numbers) == 1:
        numbers = [0, *numbers]
    start, stop, step = numbers if len(numbers) == 3 else [*numbers, 1]
    if step == 0:
        raise ConfigError(where, "range() step must not be 0")
    count = max(0, math.ceil((stop - start) / step))
    as_float = any(isinstance(n, float) for n in numbers)
    return [json.dumps(start + i * step) if as_float else str(start + i * step)
            for i in range(count)]  # fmt: skip


def expand(overrides: Sequence[str]) -> tuple[list[str], list[list[str]]]:
    """The overrides every run gets, and each run's swept overrides (the grid, in order)."""
    common: list[str] = []
    axes: list[list[str]] = []
    for item in overrides:
        key, eq, text = item.partition("=")
        values = sweep_values(text, where=f"override '{item}'") if eq else None
        if values is None:
            common.append(item)
        elif not values:
            raise ConfigError(f"override '{item}'", "the sweep lists no value")
        else:
            axes.append([f"{key}={v}" for v in values])
    return common, [list(run) for run in itertools.product(*axes)]


# --- the runs --------------------------------------------------------------------------------


@attrs.frozen
class SweepRun:
    """One run of a sweep: what it changed, how it ended and what it reached."""

    index: int
    overrides: tuple[str, ...]
    run_dir: Path
    status: Literal["finished", "failed"]
    seconds: float
    value: float | None = None  # the monitored metric at its best
    best_epoch: int | None = None
    error: str = ""


@attrs.frozen
class SweepResult:
    sweep_dir: Path
    monitor: str
    mode: Mode
    runs: tuple[SweepRun, ...]  # sorted: best first, failed last
    table: Path


def monitor_of(experiment: Mapping[str, Any]) -> tuple[str, Mode]:
    """The metric the experiment's ModelCheckpoint (else EarlyStopping) ranks by, and its mode."""
    callbacks = experiment.get("callbacks") or ()
    for wanted in MONITORED:
        for callback in callbacks:
            params = callback.get("params") or {}
            if callback.get("name") == wanted and params.get("monitor"):
                return str(params["monitor"]), "max" if params.get("mode") == "max" else "min"
    return FALLBACK_MONITOR


def run_sweep(
    experiment: str | Path,
    overrides: Sequence[str],
    *,
    command: str = "fit",
    debug: bool = False,
    echo: Callable[[str], None] = print,
) -> SweepResult:
    """Run the grid ``overrides`` describe, each run a child ``okc fit``; the ranked runs.

    ``command`` is the command the sweep was asked of: ``fit``, or ``run`` (TorchOk's) with
    the experiment's mode train."""
    common, grid = expand(overrides)
    base = load_experiment(experiment, common)  # a broken common override stops the sweep here
    check_sweepable((base.mode or "train") if command == "run" else command)
    monitor, mode = monitor_of(base.to_dict())
    stamp = dt.datetime.now().strftime("%Y-%m-%d/%H-%M-%S")
    sweep_dir = experiment_log_dir(base) / "multirun" / stamp
    while sweep_dir.exists():  # two sweeps in the same second
        sweep_dir = sweep_dir.with_name(sweep_dir.name + "-1")
    stamp = sweep_dir.relative_to(experiment_log_dir(base)).as_posix()
    log_dir = Path(logger_spec(base).log_dir).expanduser().resolve()
    echo(f"sweep of {len(grid)} runs in {sweep_dir}")
    runs: list[SweepRun] = []
    try:
        for index, swept in enumerate(grid):
            echo(f"#{index} : {' '.join(swept) or '(no overrides)'}")
            placement = [f"logger.log_dir={json.dumps(str(log_dir))}",
                         f"logger.timestamp={json.dumps(f'{stamp}/{index}')}"]  # fmt: skip
            argv = ["fit", str(experiment), *common, *swept, *placement, *["--debug"][:debug]]
            run = _run_one(index, swept, sweep_dir / str(index), argv, monitor, mode)
            echo(f"#{index} : {_outcome(run, monitor)}")
            runs.append(run)
    finally:  # interrupted too: the table of the runs done so far
        ranked = tuple(sorted(runs, key=lambda r: _rank(r, mode)))
        table = write_table(ranked, sweep_dir / TABLE_FILE, monitor=monitor)
    return SweepResult(sweep_dir, monitor, mode, ranked, table)


def _run_one(
    index: int, swept: list[str], run_dir: Path, argv: list[str], monitor: str, mode: Mode
) -> SweepRun:
    """One child ``okc`` process; its output goes to ``okc.log`` in its run folder."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / SWEEP_OVERRIDES).write_text(yaml.safe_dump(swept), encoding="utf-8")
    log = run_dir / "okc.log"
    start = time.monotonic()
    with log.open("w", encoding="utf-8") as out:
        code = subprocess.run(
            [sys.executable, "-m", "okc", *argv], stdout=out, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"}, check=False,
        ).returncode  # fmt: skip
    seconds = time.monotonic() - start
    if code == 130:
        raise KeyboardInterrupt  # Ctrl-C reached the run too: stop the sweep
    if code != 0:
        return SweepRun(index, tuple(swept), run_dir, "failed", seconds, error=_error(log, code))
    value, epoch = best_value(run_dir, monitor, mode)
    return SweepRun(index, tuple(swept), run_dir, "finished", seconds, value, epoch)


def _error(log: Path, code: int) -> str:
    """The run's own error line (``error: ...``), else its last line, and how it exited."""
    text = log.read_text(encoding="utf-8", errors="replace")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    said = next((line for line in reversed(lines) if line.startswith("error:")), None)
    said = said or (lines[-1] if lines else "no output")
    how = f"killed by signal {-code}" if code < 0 else f"exit {code}"
    return f"{how}: {said.removeprefix('error: ')}"


def best_value(run_dir: Path, monitor: str, mode: Mode) -> tuple[float | None, int | None]:
    """The monitored metric's best epoch value in a run's ``metrics.jsonl``, and that epoch."""
    path = run_dir / "metrics.jsonl"
    points = []
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a cut last line
            value = record.get(monitor)
            if isinstance(value, int | float) and not math.isnan(value):
                points.append((float(value), int(record.get("epoch", 0))))
    if not points:
        return None, None
    pick = max if mode == "max" else min
    return pick(points, key=lambda p: p[0])


def _rank(run: SweepRun, mode: Mode) -> tuple[int, float, int]:
    """Finished runs with a value first, best first; then those without; failed last."""
    if run.status == "failed":
        return (2, 0.0, run.index)
    if run.value is None:
        return (1, 0.0, run.index)
    return (0, -run.value if mode == "max" else run.value, run.index)


def _outcome(run: SweepRun, monitor: str) -> str:
    if run.status == "failed":
        return f"failed after {run.seconds:.0f} s ({run.error})"
    value = "not logged" if run.value is None else f"{run.value:.6g} (epoch {run.best_epoch})"
    return f"finished in {run.seconds:.0f} s, {monitor} {value}"


def swept_keys(runs: Sequence[SweepRun]) -> list[str]:
    """The keys the sweep varies, in command-line order (each is a column of the table)."""
    return list(dict.fromkeys(o.partition("=")[0] for r in runs for o in r.overrides))


def _values(run: SweepRun, keys: Sequence[str]) -> list[str]:
    given = dict(o.partition("=")[::2] for o in run.overrides)
    return [given.get(k, "") for k in keys]


def _headers(keys: Sequence[str]) -> list[str]:
    """Column titles: each key's last part (``lr``) where those are unique, else the keys."""
    short = [k.lstrip("+~").rpartition(".")[2] for k in keys]
    return short if len(set(short)) == len(short) else list(keys)


def write_table(runs: Sequence[SweepRun], path: Path, *, monitor: str) -> Path:
    """``sweep.csv``: one row per run in ranking order, a column per swept key."""
    keys = swept_keys(runs)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["run", *keys, "status", monitor, "best_epoch", "seconds", "run_dir",
                         "error"])  # fmt: skip
        for r in runs:
            value = "" if r.value is None else repr(r.value)
            epoch = "" if r.best_epoch is None else r.best_epoch
            writer.writerow([r.index, *_values(r, keys), r.status, value, epoch,
                             f"{r.seconds:.1f}", r.run_dir, r.error])  # fmt: skip
    return path


def print_table(result: SweepResult) -> None:
    """The ranked runs as a rich table (the CSV holds the same rows), failed runs' errors below."""
    from rich.console import Console
    from rich.table import Table

    keys = swept_keys(result.runs)
    arrow = "↑" if result.mode == "max" else "↓"
    table = Table(title=f"sweep: {len(result.runs)} runs, ranked by {result.monitor} ({arrow})")
    for column in ("#", *_headers(keys), "status", result.monitor, "best epoch", "time"):
        table.add_column(column, overflow="fold", justify="right" if column == "time" else "left")
    for r in result.runs:
        value = "" if r.value is None else f"{r.value:.6g}"
        epoch = "" if r.best_epoch is None else str(r.best_epoch)
        table.add_row(str(r.index), *_values(r, keys), r.status, value, epoch,
                      f"{r.seconds:.0f} s")  # fmt: skip
    console = Console(soft_wrap=True)
    console.print(table)
    for r in result.runs:
        if r.error:
            console.print(f"#{r.index} {r.error} (log: {r.run_dir / 'okc.log'})", highlight=False)
    console.print(f"table: {result.table}", highlight=False)


def check_sweepable(command: str) -> None:
    if command not in ("fit", "train"):
        raise OkcError(f"--multirun sweeps training runs only (okc fit, or mode train); "
                       f"not '{command}'")  # fmt: skip
