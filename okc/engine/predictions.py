"""``okc predict`` output: one CSV row per sample (plus every tensor in a ``.pt`` beside it).

CSV columns: ``index`` (the dataset index), then each of the task's ``predict_outputs``: a scalar
per sample is one column, a short vector (at most ``MAX_COLUMNS`` values) is ``name_0 ...
name_k``; anything bigger (masks, embeddings) is only in the ``.pt`` file, a dict of tensors that
``torch.load(path, weights_only=True)`` reads. Several PREDICT loaders write ``<stem>_<i>.csv``;
under several processes each rank writes ``<stem>_rank<r>.csv``.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor

MAX_COLUMNS = 64


class PredictionWriter:
    def __init__(self, path: str | Path, *, rank: int = 0, world_size: int = 1) -> None:
        self.path = Path(path).expanduser()
        self.rank, self.world_size = rank, world_size
        self.parts: dict[int, dict[str, list[Tensor]]] = defaultdict(lambda: defaultdict(list))

    def add(self, loader: int, index: Tensor | None, columns: Mapping[str, Tensor]) -> None:
        part = self.parts[loader]
        if index is not None:
            part["index"].append(index.detach().cpu())
        for key, value in columns.items():
            part[key].append(value.detach().cpu())  # sync point (predict only)

    def _target(self, loader: int) -> Path:
        stem = self.path.stem
        if len(self.parts) > 1:
            stem += f"_{loader}"
        if self.world_size > 1:
            stem += f"_rank{self.rank}"
        return self.path.with_name(stem + (self.path.suffix or ".csv"))

    def write(self) -> Path:
        """Write every loader's predictions; returns the first CSV path."""
        written = []
        for loader in sorted(self.parts):
            tensors = {k: torch.cat(v) for k, v in self.parts[loader].items()}
            target = self._target(loader)
            target.parent.mkdir(parents=True, exist_ok=True)
            torch.save(tensors, target.with_suffix(".pt"))
            _write_csv(target, tensors)
            written.append(target)
        if not written:  # an empty PREDICT set still leaves a file saying so
            target = self._target(0)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text("index\n")
            written.append(target)
        return written[0]


def _write_csv(path: Path, tensors: Mapping[str, Tensor]) -> None:
    columns: dict[str, Tensor] = {}
    for key, value in tensors.items():
        flat = value.reshape(value.shape[0], -1) if value.dim() > 1 else value
        if flat.dim() == 1:
            columns[key] = flat
        elif flat.shape[1] <= MAX_COLUMNS:
            columns.update({f"{key}_{i}": flat[:, i] for i in range(flat.shape[1])})
    rows = len(next(iter(columns.values()))) if columns else 0
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        lists = [c.tolist() for c in columns.values()]
        for i in range(rows):
            writer.writerow([_fmt(col[i]) for col in lists])


def _fmt(value: float | int | bool) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(int(value))
