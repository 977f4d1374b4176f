"""The experiment: frozen attrs classes mirroring TorchOk's config sections.

Field names, defaults and meanings follow TorchOk (see the spec) so its YAML files load unchanged;
okc additions are marked. Component ``params`` stay plain mappings here: they are checked against
the component's signature by ``okc check`` / when built, not by this schema. Nothing mutates an
experiment after loading: derive a changed one with ``attrs.evolve`` or overrides.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any, Literal

import attrs

Params = Mapping[str, Any]


class Phase(enum.Enum):
    """Data phases: written by name in files (``[VALID, TEST]``), logged by value (``valid/x``)."""

    TRAIN = "train"
    VALID = "valid"
    TEST = "test"
    PREDICT = "predict"


ALL_PHASES = (Phase.TRAIN, Phase.VALID, Phase.TEST, Phase.PREDICT)


def _params() -> Any:
    return attrs.field(factory=dict)


@attrs.frozen
class Component:
    """A registry name plus constructor keyword arguments."""

    name: str
    params: Params = _params()


# --- task ---------------------------------------------------------------------------------------


@attrs.frozen
class LoadCheckpoint:
    """Partial / merged weight loading applied after the model is built (spec: load_checkpoint)."""

    base_ckpt_path: str | None = None
    overridden_name2ckpt_path: Mapping[str, str] | None = None
    exclude_keys: tuple[str, ...] = ()
    strict: bool = True


@attrs.frozen
class SeedParams:
    seed: int | None = None
    workers: bool = False


@attrs.frozen
class Task:
    name: str
    params: Params = _params()
    compute_loss_on_valid: bool = True
    load_checkpoint: LoadCheckpoint | None = None
    # The spec's "Seeding randomizers" example puts seed_params under task; TorchOk reads it only at
    # the top level. okc accepts either place (not both).
    seed_params: SeedParams | None = None


# --- losses ---------------------------------------------------------------------------------------


@attrs.frozen
class Loss:
    name: str
    mapping: Mapping[str, str]
    params: Params = _params()
    tag: str | None = None
    weight: float | None = None


@attrs.frozen
class JointLoss:
    losses: tuple[Loss, ...]
    normalize_weights: bool = True


# --- optimization ---------------------------------------------------------------------------------


@attrs.frozen
class Optimizer:
    name: str
    params: Params = _params()
    # mmcv-style per-parameter options: custom_keys, bias_lr_mult, bias_decay_mult, norm_decay_mult
    paramwise_cfg: Params = _params()


@attrs.frozen
class SchedulerPL:
    """When the scheduler steps (TorchOk's Lightning ``pl_params``)."""

    interval: Literal["step", "epoch"] = "epoch"
    frequency: int = 1
    # TorchOk's default 'val_loss' is a key it never logs; okc defaults to what it does log.
    monitor: str = "valid/loss"
    strict: bool = True
    name: str | None = None


@attrs.frozen
class Scheduler:
    name: str
    params: Params = _params()
    pl_params: SchedulerPL = SchedulerPL()


@attrs.frozen
class Optimization:
    optimizer: Optimizer
    scheduler: Scheduler | None = None
    # okc: parameter-name prefixes this optimizer owns (e.g. ["backbone"]). Empty means "all
    # parameters no other optimizer claims" (TorchOk gave every optimizer every parameter).
    modules: tuple[str, ...] = ()


# --- data -----------------------------------------------------------------------------------------


@attrs.frozen
class Augmentation:
    """One transform/augmentation; containers (OneOf, Compose) hold ``params.transforms``."""

    name: str
    params: Params = _params()


@attrs.frozen
class Dataset:
    name: str
    params: Params = _params()
    # Deterministic ops. Size-changing ones (Resize, CenterCrop) run per sample before batching;
    # the rest (Normalize, ToTensorV2) run on the batch, on the device.
    transform: tuple[Augmentation, ...] = ()
    # Random ops, run on the batch on the device, TRAIN only.
    augment: tuple[Augmentation, ...] = ()


@attrs.frozen
class DataLoader:
    """The spec's ``dataloader`` keys, with torch.utils.data.DataLoader's meanings and defaults."""

    batch_size: int = 1
    shuffle: bool = False
    # Loader threads. auto: none for data read from memory a batch at a time (a batch is one
    # gather; threads would only contend with the step for the cores), else one per core but
    # one, at most 8 (decoding files releases the GIL, so threads overlap it with the step).
    # A number (TorchOk's files write 4 or 8, meaning worker processes) is what the user allows:
    # at most that many threads, never more than the cores, none for in-memory batched reads.
    num_workers: int | Literal["auto"] = "auto"
    drop_last: bool = False
    pin_memory: bool | None = None  # None: pin when training on a GPU
    persistent_workers: bool = False  # okc's workers are threads that live as long as the loader
    prefetch_factor: int | None = None  # batches prefetched; None: 2
    timeout: float = 0
    # okc: False lets decoded batches arrive out of order (faster) but makes a mid-epoch resume
    # inexact (in-flight batches can be skipped)
    in_order: bool = True


@attrs.frozen
class DataItem:
    """One dataset + dataloader (+ sampler) pair of a phase."""

    dataset: Dataset
    dataloader: DataLoader = DataLoader()
    sampler: Component | None = None


@attrs.frozen
class Data:
    TRAIN: tuple[DataItem, ...] = ()
    VALID: tuple[DataItem, ...] = ()
    TEST: tuple[DataItem, ...] = ()
    PREDICT: tuple[DataItem, ...] = ()

    def __getitem__(self, phase: Phase) -> tuple[DataItem, ...]:
        return getattr(self, phase.name)


# --- metrics, callbacks, logging, trainer ---------------------------------------------------------


@attrs.frozen
class Metric:
    name: str
    mapping: Mapping[str, str]
    params: Params = _params()
    phases: tuple[Phase, ...] = ALL_PHASES
    val_dataloader_idxs: tuple[int, ...] = (0,)
    test_dataloader_idxs: tuple[int, ...] = (0,)
    tag: str | None = None


@attrs.frozen
class Logger:
    """Where a run writes. The run folder is ``log_dir/experiment_name/timestamp``."""

    name: str = "CSVLogger"
    log_dir: str = "~/.cache/okc/logs"
    experiment_name: str | None = None  # None: the experiment's name (TorchOk: "default")
    timestamp: str | None = None  # None: the run's start time, %Y-%m-%d/%H-%M-%S
    params: Params = _params()


Precision = Literal[
    64, 32, 16, "64", "32", "16", "64-true", "32-true", "16-mixed", "16-true",
    "bf16", "bf16-mixed", "bf16-true",
]  # fmt: skip


PreemptSignal = Literal["SIGTERM", "SIGUSR1", "SIGUSR2", "SIGHUP", "SIGQUIT"]


@attrs.frozen
class Trainer:
    """Loop settings, named as Lightning's Trainer arguments (what TorchOk passed through)."""

    accelerator: Literal["auto", "cpu", "gpu", "cuda"] = "auto"
    strategy: Literal["auto", "ddp", "fsdp", "single_device"] = "auto"
    devices: int | str | tuple[int, ...] = "auto"
    num_nodes: int = 1
    precision: Precision = 32
    fast_dev_run: bool | int = False
    max_epochs: int | None = None
    min_epochs: int | None = None
    max_steps: int = -1
    min_steps: int | None = None
    max_time: str | Mapping[str, float] | None = None
    limit_train_batches: int | float | None = None
    limit_val_batches: int | float | None = None
    limit_test_batches: int | float | None = None
    limit_predict_batches: int | float | None = None
    overfit_batches: int | float = 0.0
    val_check_interval: int | float | None = None
    check_val_every_n_epoch: int | None = 1
    num_sanity_val_steps: int | None = None
    log_every_n_steps: int | None = None
    enable_checkpointing: bool | None = None
    enable_progress_bar: bool | None = None
    enable_model_summary: bool | None = None
    accumulate_grad_batches: int = 1
    gradient_clip_val: float | None = None
    gradient_clip_algorithm: Literal["norm", "value"] | None = None
    deterministic: bool | Literal["warn"] | None = None
    benchmark: bool | None = None
    inference_mode: bool = True
    use_distributed_sampler: bool = True
    profiler: str | None = None
    detect_anomaly: bool = False
    barebones: bool = False
    sync_batchnorm: bool = False
    reload_dataloaders_every_n_epochs: int = 0
    default_root_dir: str | None = None
    # okc additions
    compile: bool | Literal["auto"] = "auto"  # auto: compile on GPU, eager on CPU (see env.md)
    # auto: a convnet's weights in channels_last on a CPU, and on a GPU in 16/bf16 (perf/README.md)
    channels_last: bool | Literal["auto"] = "auto"
    on_nonfinite_loss: Literal["error", "skip"] = "error"
    # FSDP2's sharded checkpoints: write the shards in the background (docs/distributed.md)
    checkpoint_async: bool = False
    # preemption and clusters (docs/distributed.md): the signals that stop fit at the next step
    # boundary with a resumable checkpoint (Ctrl-C always does); SLURM detection under srun
    # (off for an interactive allocation); requeueing a preempted SLURM job
    preempt_signals: tuple[PreemptSignal, ...] = ("SIGTERM", "SIGUSR1")
    slurm: Literal["auto", "off"] = "auto"
    slurm_requeue: bool = True


# --- the experiment -------------------------------------------------------------------------------


@attrs.frozen
class Experiment:
    task: Task
    data: Data = Data()
    trainer: Trainer = Trainer()
    joint_loss: JointLoss | None = None
    optimization: tuple[Optimization, ...] = ()
    metrics: tuple[Metric, ...] = ()
    callbacks: tuple[Component, ...] = ()
    logger: Logger | None = None
    resume_path: str | None = None
    seed_params: SeedParams | None = None
    # TorchOk's run mode (``+mode=test``); okc's subcommands take its place, ``okc run`` (and
    # ``python -m okc -cp DIR -cn NAME``) reads it.
    mode: Literal["train", "test", "predict", "find_lr"] | None = None
    # okc: a name for logs and checkpoints (default: the experiment file's stem) and modules of
    # user components to import before names are looked up.
    name: str | None = None
    imports: tuple[str, ...] = ()
    # Hydra's own section in TorchOk files; accepted so those files load, not used.
    hydra: Params | None = None

    @property
    def seed(self) -> SeedParams | None:
        """The seed settings, wherever the file put them."""
        return self.seed_params or self.task.seed_params

    def to_dict(self) -> dict[str, Any]:
        """Plain data (lists, dicts, str/int/float/bool/None) that ``from_dict`` reads back."""
        from okc.config.convert import unstructure

        return unstructure(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Experiment:
        """Validate and structure plain data; errors name the key path (``ConfigErrors``)."""
        from okc.config.convert import structure

        return structure(data, cls)
