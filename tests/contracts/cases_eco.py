"""Cases of the components issue #14 adds around the trainer (see README.md)."""

from __future__ import annotations

from contracts.runners import Case

CASES: dict[tuple[str, str], Case] = {
    # a 2-step fit with the grid written at the first step (tests/test_tensorboard.py checks it)
    ("callbacks", "TrainImageGrid"): Case(params={"num_images": 4}),
}
