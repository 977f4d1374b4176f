"""Seeding: one seed drives Python, NumPy, torch and the data pipeline."""

from __future__ import annotations

import random

import numpy as np
import torch

from okc.config.schema import SeedParams


def seed_everything(params: SeedParams | None) -> int:
    """Seed every RNG; without a configured seed pick one, so a run can always be repeated.

    ``seed_params.workers`` is accepted for TorchOk files: okc's data pipeline is always seeded
    from this seed (its random draws do not depend on how many workers decode).
    """
    seed = (
        params.seed
        if params and params.seed is not None
        else random.SystemRandom().randrange(2**31)
    )
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return seed
