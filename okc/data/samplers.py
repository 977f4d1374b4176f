"""Samplers for the ``sampler`` key of a data item (the SAMPLERS registry).

A sampler decides the order of one epoch before sharding and batching (see ``okc.data.sampling``),
from a generator seeded by (seed, epoch): runs and resumes stay reproducible.

okc passes a sampler what it cannot know from its params, when its signature asks for it:
``dataset`` (the built dataset) and ``batch_size`` (the data item's ``dataloader.batch_size``).
"""

from __future__ import annotations

import inspect
import math
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch

from okc.data.annotations import read_table
from okc.errors import OkcError, ParamError
from okc.registry import SAMPLERS

# What okc passes a sampler that takes it (see the module docstring).
SUPPLIED = ("dataset", "batch_size")


def supplied(target: Callable[..., Any]) -> tuple[str, ...]:
    """The arguments of ``SUPPLIED`` that ``target``'s signature takes."""
    parameters = inspect.signature(target).parameters
    return tuple(name for name in SUPPLIED if name in parameters)


@runtime_checkable
class LabeledDataset(Protocol):
    """A dataset that knows every sample's class without reading its image."""

    def class_labels(self) -> torch.Tensor: ...


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


@SAMPLERS.register
class PKSampler:
    """Class-balanced batches for metric learning: P classes × K samples each.

    Every batch holds ``P = batch_size / samples_per_class`` distinct classes, drawn uniformly, and
    ``K = samples_per_class`` samples of each, so that every sample has positives (and negatives)
    in its batch for in-batch mining (batch-hard triplets, hard contrastive pairs). A class with
    fewer than K samples repeats them, each at most ``ceil(K / size)`` times. The batches are the
    epoch's order (a ``BatchSampler``): under several processes each rank reads whole batches.

    pytorch-metric-learning's ``MPerClassSampler`` draws from NumPy's global random state, so a
    resumed run would not see the same batches; this one draws everything from the (seed, epoch)
    generator, like okc's other samplers, and resumes exactly.

    Args:
        samples_per_class: K (at least 2: a positive pair needs two samples).
        num_batches: batches per epoch (default: as many as the dataset fills,
            ``len(dataset) // batch_size``).
        dataset, batch_size: supplied by okc: the data item's dataset (its classes come from its
            ``class_labels()``, or else from reading every sample's ``target`` once) and
            ``dataloader.batch_size``, which must be a multiple of ``samples_per_class``.
    """

    def __init__(
        self,
        *,
        dataset: Any,
        batch_size: int,
        samples_per_class: int = 4,
        num_batches: int | None = None,
    ) -> None:
        if samples_per_class < 2:
            raise ParamError(
                "samples_per_class",
                f"must be at least 2 (a positive pair), got {samples_per_class}",
            )
        if batch_size % samples_per_class:
            raise ParamError(
                "samples_per_class",
                f"must divide dataloader.batch_size ({batch_size}) into whole classes, got "
                f"{samples_per_class}",
            )
        if num_batches is not None and num_batches < 1:
            raise ParamError("num_batches", f"must be at least 1, got {num_batches}")
        labels = _class_labels(dataset)
        classes, inverse = torch.unique(labels, return_inverse=True)
        by_class = inverse.argsort(stable=True)
        counts = torch.bincount(inverse, minlength=len(classes)).tolist()
        self.members = list(by_class.split(counts))
        self.batch_size = batch_size
        self.samples_per_class = samples_per_class
        self.classes_per_batch = batch_size // samples_per_class
        if self.classes_per_batch > len(classes):
            raise ParamError(
                "samples_per_class",
                f"batches of {batch_size} need {self.classes_per_batch} classes of "
                f"{samples_per_class}, but the dataset has {len(classes)} classes",
            )
        self.num_labels = len(labels)
        self.num_batches = num_batches or max(1, len(labels) // batch_size)

    def num_indices(self, num_samples: int) -> int:
        return self.num_batches * self.batch_size

    def order(self, num_samples: int, generator: torch.Generator) -> torch.Tensor:
        if num_samples != self.num_labels:
            raise OkcError(
                f"PKSampler knows the classes of {self.num_labels} samples, the dataset has "
                f"{num_samples}"
            )
        k = self.samples_per_class
        picks = []
        for _ in range(self.num_batches):
            chosen = torch.randperm(len(self.members), generator=generator)
            for c in chosen[: self.classes_per_batch].tolist():
                members = self.members[c]
                rounds = math.ceil(k / len(members))
                draws = [torch.randperm(len(members), generator=generator) for _ in range(rounds)]
                picks.append(members[torch.cat(draws)[:k]])
        return torch.cat(picks)


def _class_labels(dataset: Any) -> torch.Tensor:
    if isinstance(dataset, LabeledDataset):
        labels = dataset.class_labels()
    else:
        if len(dataset) > 10_000:
            warnings.warn(
                f"PKSampler reads all {len(dataset)} samples once to learn their classes; a "
                "dataset with class_labels() saves that",
                stacklevel=3,
            )
        labels = torch.stack([_target(dataset, i) for i in range(len(dataset))])
    if labels.ndim != 1 or labels.is_floating_point():
        raise OkcError(
            f"PKSampler needs one class id per sample, got labels of shape {tuple(labels.shape)} "
            f"and dtype {labels.dtype} (multi-hot targets have no single class)"
        )
    return labels.long()


def _target(dataset: Any, index: int) -> torch.Tensor:
    sample = dataset[index]
    if "target" not in sample:
        raise OkcError(f"PKSampler needs class targets: sample {index} has no 'target'")
    return torch.as_tensor(sample["target"])
