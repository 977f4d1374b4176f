"""The callback protocol: the points in the loop where callbacks run.

Concrete callbacks live in ``okc.callbacks`` and import the engine, never the other way round; the
loop finds them by name through the CALLBACKS registry. Every hook receives the running ``Loop``
(its ``epoch``, ``global_step``, ``run_dir``, ``task``, ``logged`` metrics, ``should_stop``...).
Callbacks with state (best scores, patience counters) implement ``state_dict`` /
``load_state_dict`` and are restored on resume.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from okc.engine.loop import Loop


class Callback:
    """Base class; override the hooks you need. All hooks are no-ops here."""

    #: callbacks that only make sense on the main process (writing files, printing)
    main_process_only: bool = False
    #: where the callback's params are in the experiment, for error messages
    config_path: str = "callbacks"

    def setup(self, loop: Loop, stage: str) -> None:
        """Before anything runs; ``stage`` is fit, validate, test or predict."""

    def on_fit_start(self, loop: Loop) -> None: ...
    def on_train_epoch_start(self, loop: Loop) -> None: ...
    def on_train_batch_end(self, loop: Loop, logs: Mapping[str, float] | None) -> None:
        """After an optimizer step (``logs`` holds step metrics on logging steps, else None)."""

    def on_train_epoch_end(self, loop: Loop) -> None: ...
    def on_validation_start(self, loop: Loop) -> None: ...
    def on_validation_batch_end(self, loop: Loop, batch_idx: int, num_batches: int) -> None: ...
    def on_validation_end(self, loop: Loop, metrics: Mapping[str, float]) -> None: ...
    def on_epoch_end(self, loop: Loop, metrics: Mapping[str, float]) -> None:
        """After training and (if due) validation of an epoch, with everything logged for it."""

    def on_fit_end(self, loop: Loop) -> None: ...
    def on_interrupt(self, loop: Loop) -> None:
        """Ctrl-C or SIGTERM during fit: the last chance to save where the run stands."""

    def on_exception(self, loop: Loop, error: BaseException) -> None: ...
    def teardown(self, loop: Loop, stage: str) -> None: ...

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        pass
