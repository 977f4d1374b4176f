"""Seeding: one seed drives Python, NumPy, torch and the data pipeline."""

from __future__ import annotations

import random

import numpy as np
import torch

from okc.config.schema import SeedParams


def choose_seed(params: SeedParams | None) -> int:
    """The configured seed, or a fresh one: every run has a seed, so every run can be repeated.

    ``seed_params.workers`` is accepted for TorchOk files: okc's data pipeline is always seeded
    from this seed (its random draws do not depend on how many workers decode).
    """
    if params is not None and params.seed is not None:
        return params.seed
    return random.SystemRandom().randrange(2**31)


def seed_everything(seed: int) -> int:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return seed
