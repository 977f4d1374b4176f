"""Samplers for the ``sampler`` key of a data item (the SAMPLERS registry).

A sampler decides the order of one epoch before sharding and batching (see ``okc.data.sampling``),
from a generator seeded by (seed, epoch): runs and resumes stay reproducible.
"""

from __future__ import annotations

from pathlib import Path

import torch

from okc.data.annotations import read_table
from okc.errors import OkcError
from okc.registry import SAMPLERS


@SAMPLERS.register
class WeightedSampler:
    """Draw samples with probability proportional to a CSV weight column (TorchOk's sampler).

    Args:
        annotation_path: the CSV, row ``i`` being dataset sample ``i``; relative to
            ``data_folder`` unless absolute.
        data_folder: the folder ``annotation_path`` is relative to.
        weight_column: the column of non-negative weights.
        num_samples: draws per epoch (default: one per dataset sample). okc reads it from here,
            where TorchOk passed it twice and failed.
        replacement: draw with replacement.
    """

    def __init__(
        self,
        *,
        annotation_path: str,
        data_folder: str = "",
        weight_column: str = "weight",
        num_samples: int | None = None,
        replacement: bool = True,
    ) -> None:
        table = read_table(Path(data_folder).expanduser() / annotation_path, [weight_column])
        try:
            self.weights = torch.tensor(
                [float(w) for w in table[weight_column]], dtype=torch.float64
            )
        except ValueError as err:
            raise OkcError(
                f"{table.path}: column '{weight_column}' is not numeric ({err})"
            ) from None
        if (self.weights < 0).any() or not self.weights.sum() > 0:
            raise OkcError(f"{table.path}: weights must be non-negative and not all zero")
        if num_samples is not None and num_samples < 1:
            raise ValueError(f"num_samples must be at least 1, not {num_samples}")
        if not replacement and num_samples is not None and num_samples > len(self.weights):
            raise ValueError("num_samples exceeds the dataset size, which needs replacement: true")
        self.num_samples = num_samples
        self.replacement = replacement

    def num_indices(self, num_samples: int) -> int:
        return self.num_samples or num_samples

    def order(self, num_samples: int, generator: torch.Generator) -> torch.Tensor:
        if len(self.weights) != num_samples:
            raise OkcError(
                f"WeightedSampler has {len(self.weights)} weights for a dataset of {num_samples}"
            )
        return torch.multinomial(
            self.weights, self.num_indices(num_samples), self.replacement, generator=generator
        )
