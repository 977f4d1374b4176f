"""Plain-file metric logs: JSONL (one record per call) and CSV (one row per call)."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping
from pathlib import Path

from okc.registry import LOGGERS


def _number(value: float) -> float | str:
    return value if math.isfinite(value) else str(value)  # JSON has no nan/inf


@LOGGERS.register
class JSONLLogger:
    """``metrics.jsonl``: ``{"epoch": e, "step": s, "<key>": value, ...}`` per line.

    Closing writes one last record with how the run ended: ``{"epoch", "step", "status"}``
    (FINISHED, FAILED or KILLED), so a crashed run is told apart from a finished one.
    """

    def __init__(self, *, run_dir: Path) -> None:
        self.path = Path(run_dir) / "metrics.jsonl"
        self._file = self.path.open("a", encoding="utf-8")
        self._where = {"epoch": 0, "step": 0}

    def log(self, metrics: Mapping[str, float], *, step: int, epoch: int) -> None:
        self._where = {"epoch": epoch, "step": step}
        self._write({**self._where, **{k: _number(v) for k, v in metrics.items()}})

    def _write(self, record: Mapping[str, object]) -> None:
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()

    def close(self, status: str = "FINISHED") -> None:
        if not self._file.closed:
            self._write({**self._where, "status": status})
            self._file.close()


@LOGGERS.register
class CSVLogger:
    """``metrics.csv`` with one column per key; rewritten when a new key appears.

    A table of metrics has no place for the run's status: closing flushes the rows (see
    ``metrics.jsonl`` for the status).
    """

    def __init__(self, *, run_dir: Path, flush_logs_every_n_steps: int = 1) -> None:
        self.path = Path(run_dir) / "metrics.csv"
        self.rows: list[dict[str, float | int]] = []
        self.columns: list[str] = ["epoch", "step"]
        self.flush_every = max(1, flush_logs_every_n_steps)
        self._written = 0

    def log(self, metrics: Mapping[str, float], *, step: int, epoch: int) -> None:
        new = [k for k in metrics if k not in self.columns]
        self.columns += sorted(new)
        self.rows.append({"epoch": epoch, "step": step, **metrics})
        if new or len(self.rows) - self._written >= self.flush_every:
            self._flush(rewrite=bool(new))

    def _flush(self, *, rewrite: bool) -> None:
        rewrite = rewrite or self._written == 0
        with self.path.open("w" if rewrite else "a", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=self.columns)
            if rewrite:
                writer.writeheader()
            writer.writerows(self.rows if rewrite else self.rows[self._written :])
        self._written = len(self.rows)

    def close(self, status: str = "FINISHED") -> None:
        if self._written < len(self.rows):
            self._flush(rewrite=False)
