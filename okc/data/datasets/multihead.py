"""MultiHeadImageDataset: one CSV row per image, one column per target (TorchOk's format).

``targets`` is TorchOk's list of ``{name, column, type, num_classes, dtype, path_to_embeddings}``;
each gives the sample key ``target_<name>``:

- ``multiclass``: an integer class id in ``0..num_classes-1`` (int64);
- ``multilabel``: any string of integers (``"0 3"``, ``"0,3"``; empty: none) as a float multi-hot
  of length ``num_classes``;
- ``embedding``: a vector of floats, either from ``path_to_embeddings`` (a CSV whose first column
  is the image path, as in ``input_column``, and the other columns the vector: TorchOk's .npy
  layout) or, without it, from the target's own column as a string of numbers (``"0.1 0.5"``).

An empty cell in a ``multiclass`` or ``embedding`` column means the image has no such target: the
sample then gets ``condition_<name>`` (bool) false and a placeholder value, and
``MultiHeadClassificationTask`` shows that target's heads only the rows whose condition is true.
``condition_<name>`` exists for every sample of a target that has at least one empty cell.

TorchOk read the embeddings with ``np.load(allow_pickle=True)``, which runs code from the file, and
its embedding branch did not work (an undefined attribute); okc reads a CSV instead.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import attrs
import torch

from okc.data.annotations import Table, read_table
from okc.data.datasets.base import CsvDataset, CsvSource, TargetDtype, to_dtype
from okc.data.datasets.classification import _multi_hot
from okc.errors import OkcError, ParamError
from okc.registry import DATASETS

_INT = re.compile(r"-?\d+")
TargetType = Literal["multiclass", "multilabel", "embedding"]


@attrs.frozen(kw_only=True)
class TargetSpec:
    """One item of ``targets`` (TorchOk's keys)."""

    name: str
    column: str
    type: TargetType
    num_classes: int | None = None
    dtype: TargetDtype | None = None
    path_to_embeddings: str | None = None

    def __attrs_post_init__(self) -> None:
        if self.type != "embedding" and (self.num_classes is None or self.num_classes < 1):
            raise ParamError("num_classes", f"a {self.type} target needs num_classes >= 1")
        if self.path_to_embeddings is not None and self.type != "embedding":
            raise ParamError("path_to_embeddings", "is for embedding targets only")


@DATASETS.register
class MultiHeadImageDataset(CsvDataset):
    """Images listed in a CSV with one column per target (see the module docstring).

    Image paths are relative to ``data_folder``; so are ``annotation_path`` and
    ``path_to_embeddings`` unless absolute.
    """

    @attrs.frozen(kw_only=True)
    class Params(CsvSource):
        annotation_path: str
        targets: tuple[TargetSpec, ...]

        def __attrs_post_init__(self) -> None:
            if not self.targets:
                raise ParamError("targets", "expected a non-empty list of targets")
            names = [t.name for t in self.targets]
            for i, name in enumerate(names):
                if name in names[:i]:
                    raise ParamError(f"targets.{i}.name", f"target name '{name}' is repeated")

    def load(self, p: Params) -> None:
        own = [t.column for t in p.targets if t.path_to_embeddings is None]
        folder = self._read(p, own)
        self.values: dict[str, torch.Tensor] = {}
        if not self.test_mode:
            for spec in p.targets:
                self._add_target(spec, folder, p.input_column)

    def _add_target(self, spec: TargetSpec, folder: Path, input_column: str) -> None:
        if spec.type == "multilabel":
            values, present = _multi_hot(self.table, spec.column, spec.num_classes), None
        elif spec.type == "multiclass":
            values, present = _class_ids(self.table, spec.column, spec.num_classes)
        elif spec.path_to_embeddings is None:
            cells = [(self.table.where(r), v) for r, v in enumerate(self.table[spec.column])]
            values, present = _vectors(cells, f"column '{spec.column}'")
        else:
            values, present = self._joined_vectors(folder / spec.path_to_embeddings, input_column)
        default = "float32" if spec.type != "multiclass" else "long"
        self.values[f"target_{spec.name}"] = values.to(to_dtype(spec.dtype or default))
        if present is not None and not present.all():
            self.values[f"condition_{spec.name}"] = present

    def _joined_vectors(self, path: Path, input_column: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows of an embeddings CSV (image path, then the vector) matched to ours by path."""
        if path.suffix in (".npy", ".npz"):
            raise OkcError(
                f"{path}: okc reads embeddings from a CSV (image path, then one column per "
                "value), not .npy: TorchOk's .npy held Python objects, which run code when "
                "loaded; convert it, e.g. pandas.DataFrame(np.load(p, allow_pickle=True))"
                ".to_csv(new_path, index=False)"
            )
        with open(_existing(path), encoding="utf-8-sig") as f:
            header = f.readline().strip().split(",")
        table = read_table(path, header)
        cells = [(table.where(r), " ".join(table[c][r] for c in header[1:]))
                 for r in range(len(table))]  # fmt: skip
        vectors, _ = _vectors(cells, "the vector columns")
        by_path = {p: i for i, p in enumerate(table[header[0]])}
        index = torch.tensor([by_path.get(p, -1) for p in self.table[input_column]])
        present = index >= 0
        values = torch.zeros(len(index), vectors.shape[1])
        values[present] = vectors[index[present]]
        return values, present

    def __getitem__(self, index: int) -> dict[str, Any]:
        row, sample = self._first(index)
        sample.update({key: values[row] for key, values in self.values.items()})
        return sample


def _existing(path: Path) -> Path:
    if not path.is_file():
        raise OkcError(f"embeddings file not found: {path}")
    return path


def _class_ids(
    table: Table, column: str, num_classes: int | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Class ids (0 where the cell is empty) and which rows have one."""
    assert num_classes is not None
    ids, present = [], []
    for row, value in enumerate(table[column]):
        present.append(value != "")
        if not value:
            ids.append(0)
            continue
        if not _INT.fullmatch(value):
            raise OkcError(f"{table.where(row)}: column '{column}': '{value}' is not a class id")
        ids.append(int(value))
        if not 0 <= ids[-1] < num_classes:
            raise OkcError(
                f"{table.where(row)}: column '{column}': class {value} is not in "
                f"0..{num_classes - 1}"
            )
    return torch.tensor(ids, dtype=torch.int64), torch.tensor(present)


def _vectors(cells: list[tuple[str, str]], what: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Float vectors from strings of numbers; all of one length; empty cells are absent rows."""
    parsed: list[list[float] | None] = []
    for where, value in cells:
        if not value.strip():
            parsed.append(None)
            continue
        try:
            parsed.append([float(v) for v in re.split(r"[\s,;]+", value.strip())])
        except ValueError:
            raise OkcError(f"{where}: {what}: '{value}' is not a list of numbers") from None
    lengths = {len(v) for v in parsed if v is not None}
    if len(lengths) > 1:
        dim = next(len(v) for v in parsed if v is not None)
        where = next(w for (w, _), v in zip(cells, parsed, strict=True) if v and len(v) != dim)
        raise OkcError(f"{where}: {what}: not {dim} numbers like the rows before")
    dim = lengths.pop() if lengths else 0
    values = torch.tensor([v if v is not None else [0.0] * dim for v in parsed]).reshape(-1, dim)
    return values, torch.tensor([v is not None for v in parsed])
