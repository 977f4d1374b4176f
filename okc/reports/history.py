"""A run's logged values read back from its folder (``metrics.jsonl``, else ``metrics.csv``).

Every value okc logs is a line of ``metrics.jsonl``: ``{"epoch", "step", key: value, ...}``;
the last line of a closed run is ``{"epoch", "step", "status"}``. ``metrics.csv`` holds the same
values (without the status), so runs written by loggers that only kept the CSV read too.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import attrs

from okc.errors import OkcError

METRIC_FILES = ("metrics.jsonl", "metrics.csv")


@attrs.frozen
class RunHistory:
    """Each logged key's ``(step, value)`` points, in logging order."""

    run_dir: Path
    series: dict[str, list[tuple[int, float]]]
    status: str | None = None  # FINISHED, FAILED, KILLED; None while running (or CSV only)
    label: str = ""

    def last(self, key: str) -> float:
        return self.series[key][-1][1]


def find_runs(paths: Iterable[str | Path]) -> list[Path]:
    """Run folders from ``paths``: a run folder, its metrics file, or any folder above runs
    (every run below it, in path order)."""
    found: list[Path] = []
    for given in paths:
        path = Path(given).expanduser()
        if path.is_file() and path.name in METRIC_FILES:
            found.append(path.parent)
        elif path.is_dir() and any((path / f).is_file() for f in METRIC_FILES):
            found.append(path)
        elif path.is_dir():
            below = sorted({f.parent for name in METRIC_FILES for f in path.rglob(name)})
            if not below:
                raise OkcError(f"{path}: no run below it (no metrics.jsonl or metrics.csv)")
            found.extend(below)
        else:
            raise OkcError(f"{path}: not a run folder (it does not exist)")
    return list(dict.fromkeys(found))  # each run once, first mention first


def read_run(run_dir: str | Path) -> RunHistory:
    """The history of one run folder."""
    run_dir = Path(run_dir)
    jsonl, table = run_dir / METRIC_FILES[0], run_dir / METRIC_FILES[1]
    if jsonl.is_file():
        return _read_jsonl(run_dir, jsonl)
    if table.is_file():
        return _read_csv(run_dir, table)
    raise OkcError(f"{run_dir}: no metrics.jsonl or metrics.csv in this folder")


def read_runs(paths: Iterable[str | Path]) -> list[RunHistory]:
    """The runs found under ``paths``, each labelled by what tells it apart from the others."""
    runs = [read_run(p) for p in find_runs(paths)]
    labels = run_labels([r.run_dir for r in runs])
    return [attrs.evolve(r, label=label) for r, label in zip(runs, labels, strict=True)]


def run_labels(run_dirs: Sequence[Path]) -> list[str]:
    """Short names: the path parts after the folders all runs share (one run: its last three
    parts, ``experiment/date/time``)."""
    parts = [d.resolve().parts for d in run_dirs]
    if len(parts) == 1:
        return ["/".join(parts[0][-3:])]
    common = 0
    while all(len(p) > common + 1 for p in parts) and len({p[common] for p in parts}) == 1:
        common += 1
    return ["/".join(p[common:]) for p in parts]


def _value(raw: object) -> float | None:
    """A logged number (JSON writes nan/inf as strings); None for anything else."""
    if isinstance(raw, bool) or raw is None or raw == "":
        return None
    try:
        return float(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def _add(series: dict[str, list[tuple[int, float]]], record: dict, where: Path) -> None:
    try:
        step = int(record.get("step", 0))
    except (TypeError, ValueError):
        raise OkcError(f"{where}: 'step' is not a number: {record.get('step')!r}") from None
    for key, raw in record.items():
        if key in ("epoch", "step", "status"):
            continue
        value = _value(raw)
        if value is not None:
            series.setdefault(key, []).append((step, value))


def _read_jsonl(run_dir: Path, path: Path) -> RunHistory:
    series: dict[str, list[tuple[int, float]]] = {}
    status = None
    lines = path.read_text(encoding="utf-8").splitlines()
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if n == len(lines):
                break  # a run still writing (or killed mid-line): its last line may be cut
            raise OkcError(f"{path}:{n}: not a JSON line") from None
        status = record.get("status", status)
        _add(series, record, Path(f"{path}:{n}"))
    return RunHistory(run_dir, series, status)


def _read_csv(run_dir: Path, path: Path) -> RunHistory:
    series: dict[str, list[tuple[int, float]]] = {}
    with path.open(newline="", encoding="utf-8") as f:
        for n, row in enumerate(csv.DictReader(f), start=2):
            _add(series, row, Path(f"{path}:{n}"))
    return RunHistory(run_dir, series)
