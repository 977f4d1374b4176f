"""``okc predict`` output: one CSV row per sample (plus every value in a ``.pt`` beside it).

CSV columns: ``index`` (the dataset index), then each of the task's ``predict_outputs``: a scalar
per sample is one column, a short vector (at most ``MAX_COLUMNS`` values) is ``name_0 ...
name_k``; anything bigger (masks, embeddings) is only in the ``.pt`` file, a dict of tensors that
``torch.load(path, weights_only=True)`` reads. Outputs that are lists with one item per sample
(per-image boxes: a tensor or a dict of tensors each) go to the ``.pt`` file as lists and to a
``.jsonl`` file, one line per sample. Several PREDICT loaders write ``<stem>_<i>.csv``; under
several processes each rank writes ``<stem>_rank<r>.csv``.

Tasks whose predictions are files of their own kind (PNG masks, box files) subclass
``PredictionWriter`` and return it from ``BaseTask.prediction_writer``.
"""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from okc.tree import map_tensors

MAX_COLUMNS = 64


class PredictionWriter:
    """Collects ``add``-ed batches per PREDICT loader; ``write`` saves them and returns a path."""

    def __init__(self, path: str | Path, *, rank: int = 0, world_size: int = 1) -> None:
        self.path = Path(path).expanduser()
        self.rank, self.world_size = rank, world_size
        self.parts: dict[int, dict[str, list[Any]]] = defaultdict(lambda: defaultdict(list))
        self.listed: set[str] = set()  # outputs given as per-sample lists

    def add(self, loader: int, index: Tensor | None, columns: Mapping[str, Any]) -> None:
        """One batch of ``predict_outputs`` (tensors with a batch dim, or per-sample lists)."""
        part = self.parts[loader]
        if index is not None:
            part["index"].append(index.detach().cpu())
        for key, value in columns.items():
            cpu = map_tensors(lambda t: t.detach().cpu(), value)  # sync point (predict only)
            if isinstance(cpu, list):
                self.listed.add(key)
                part[key].extend(cpu)  # one item per sample
            else:
                part[key].append(cpu)

    def target(self, loader: int, suffix: str | None = None) -> Path:
        """The file loader ``loader`` writes (``suffix`` replaces the CSV's)."""
        stem = self.path.stem
        if len(self.parts) > 1:
            stem += f"_{loader}"
        if self.world_size > 1:
            stem += f"_rank{self.rank}"
        return self.path.with_name(stem + (suffix or self.path.suffix or ".csv"))

    def write(self) -> Path:
        """Write every loader's predictions; returns the first CSV path."""
        written = []
        for loader in sorted(self.parts):
            values = {
                k: v if k in self.listed else torch.cat(v) for k, v in self.parts[loader].items()
            }
            target = self.target(loader)
            target.parent.mkdir(parents=True, exist_ok=True)
            torch.save(values, target.with_suffix(".pt"))
            _write_csv(target, {k: v for k, v in values.items() if isinstance(v, Tensor)})
            lists = {k: v for k, v in values.items() if not isinstance(v, Tensor)}
            if lists:
                _write_jsonl(target.with_suffix(".jsonl"), values.get("index"), lists)
            written.append(target)
        if not written:  # an empty PREDICT set still leaves a file saying so
            target = self.target(0)
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


def _write_jsonl(path: Path, index: Tensor | None, lists: Mapping[str, list[Any]]) -> None:
    rows = len(next(iter(lists.values())))
    with path.open("w", encoding="utf-8") as f:
        for i in range(rows):
            row: dict[str, Any] = {"index": int(index[i])} if index is not None else {}
            row.update({k: map_tensors(Tensor.tolist, v[i]) for k, v in lists.items()})
            f.write(json.dumps(row) + "\n")


def _fmt(value: float | int | bool) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(int(value))
