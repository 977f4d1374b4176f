"""Annotation tables (CSV): the columns a dataset needs, with errors that name file and column.

TorchOk also read pandas pickles; okc reads CSV/TSV only: a pickle runs code when loaded, and pandas
is not a dependency.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

from okc.errors import OkcError, did_you_mean


class Table:
    """Columns of an annotation file, with the file line of every row for error messages."""

    def __init__(self, path: Path, columns: dict[str, list[str]], lines: list[int]) -> None:
        self.path = path
        self.columns = columns
        self.lines = lines

    def __len__(self) -> int:
        return len(self.lines)

    def __getitem__(self, column: str) -> list[str]:
        return self.columns[column]

    def where(self, row: int) -> str:
        """How an error points at data row ``row`` (0-based, as pandas numbers it)."""
        return f"{self.path} line {self.lines[row]} (row {row})"


def read_table(path: str | Path, columns: Sequence[str]) -> Table:
    """Read ``columns`` of a CSV (or TSV) file; a missing column names the ones the file has."""
    path = Path(path).expanduser()
    if path.suffix in (".pkl", ".pickle"):
        raise OkcError(
            f"{path}: okc reads CSV annotation files, not pickles (they run code when loaded); "
            "convert it, e.g. pandas.read_pickle(path).to_csv(new_path, index=False)"
        )
    if not path.is_file():
        raise OkcError(f"annotation file not found: {path}")
    delimiter = "\t" if path.suffix == ".tsv" else ","
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f, delimiter=delimiter)
        header = next(reader, None)
        if header is None:
            raise OkcError(f"{path} is empty; expected a header row with {', '.join(columns)}")
        header = [h.strip() for h in header]
        for column in columns:
            if column not in header:
                raise OkcError(
                    f"{path} has no column '{column}'{did_you_mean(column, header)} "
                    f"(its columns: {', '.join(header)})"
                )
        positions = [header.index(c) for c in columns]
        values: dict[str, list[str]] = {c: [] for c in columns}
        lines: list[int] = []
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue  # blank line
            if len(row) < len(header):
                raise OkcError(
                    f"{path} line {reader.line_num}: {len(row)} cells, the header has {len(header)}"
                )
            lines.append(reader.line_num)
            for column, pos in zip(columns, positions, strict=True):
                values[column].append(row[pos].strip())
    return Table(path, values, lines)
