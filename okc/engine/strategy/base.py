"""What the loop asks of a kind of parallelism, with the answers of a single process.

The defaults are the single device's (nothing to wrap, sync or gather; collectives are
identities), so each subclass states only what its parallelism changes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from okc.engine import distributed
from okc.engine.distributed import DistEnv


class Strategy:
    """Wrapping, gradient sync, collectives, checkpoint state and memory format of one run.

    Checkpoint state comes in two forms: ``sharded=False`` gives whole tensors in today's
    single-file layout (for DDP and one device the optimizer's own ``state_dict``);
    ``sharded=True`` gives what torch.distributed.checkpoint saves and reshards: tensors keyed
    by parameter name, each rank holding only its shard when the model is sharded.
    """

    name = "single_device"
    #: whether checkpoints are folders of per-rank shards (``okc.engine.sharded``)
    sharded_checkpoints = False

    def __init__(self, env: DistEnv, *, sync_batchnorm: bool = False) -> None:
        self.env = env
        self.sync_batchnorm = sync_batchnorm

    @property
    def device(self) -> torch.device:
        return self.env.device

    @property
    def is_main(self) -> bool:
        return self.env.is_main

    # --- the model --------------------------------------------------------------------------------

    def wrap(self, module: nn.Module, *, shard_units: Sequence[nn.Module] = ()) -> nn.Module:
        """``module`` ready for data-parallel training (before compiling it)."""
        return module

    def gradient_sync(
        self, module: nn.Module, *, enabled: bool
    ) -> contextlib.AbstractContextManager[Any]:
        """A context for one backward: ``enabled=False`` on accumulation micro-steps keeps the
        gradients local (no collective) until the step that ends the accumulation."""
        return contextlib.nullcontext()

    def channels_last(self, setting: bool | str, model: nn.Module, *, half: bool) -> bool:
        """Whether ``trainer.channels_last`` puts the model's 4-D weights in channels_last.

        ``auto`` does for a model with a 2-D convolution on a CPU, where oneDNN's channels_last
        kernels train resnet18 ~9 %, resnet10t ~15 % and mobilenetv3 (depthwise) ~3x faster
        than NCHW (perf/README.md), and on a GPU in 16/bf16 precision (tensor cores want NHWC).
        Only the weights move: a convolution whose weight is channels_last gives channels_last
        outputs from any input, so batches stay as they are, and checkpoints hold the same
        values (strides aside).
        """
        if setting != "auto":
            return bool(setting)
        device = self.device
        has_conv = any(isinstance(m, nn.Conv2d) for m in model.modules())
        return has_conv and (device.type == "cpu" or (device.type == "cuda" and half))

    # --- collectives (identities in one process) --------------------------------------------------

    def barrier(self) -> None:
        """Wait for every rank (e.g. until a checkpoint is on disk)."""

    def all_reduce_mean(self, values: dict[str, Tensor]) -> dict[str, Tensor]:
        """Mean over ranks of scalar tensors (one collective for all of them)."""
        return values

    def all_reduce_flag(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is True on any rank."""
        return flag

    def broadcast_object(self, obj: Any) -> Any:
        """The main process's ``obj`` on every rank (e.g. the run folder's timestamp)."""
        return obj

    def sync_buffers(self, module: nn.Module) -> None:
        """Give every rank the main process's buffers before evaluating."""

    def teardown(self) -> None:
        distributed.teardown()

    # --- checkpoint state -------------------------------------------------------------------------

    def model_state(self, model: nn.Module, *, sharded: bool = False) -> dict[str, Any]:
        return model.state_dict()

    def load_model_state(self, model: nn.Module, state: Mapping[str, Any]) -> None:
        model.load_state_dict(state)

    def optimizer_state(
        self, model: nn.Module, optimizer: torch.optim.Optimizer, *, sharded: bool = False
    ) -> dict[str, Any]:
        if not sharded:
            return optimizer.state_dict()
        from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

        # keyed by parameter name (not position), which is what lets DCP reshard it
        return get_optimizer_state_dict(model, optimizer)

    def load_optimizer_state(
        self, model: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]
    ) -> None:
        if not keyed_by_name(state):
            optimizer.load_state_dict(state)
            return
        from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

        set_optimizer_state_dict(model, optimizer, state)


def keyed_by_name(optimizer_state: Mapping[str, Any]) -> bool:
    """Whether an optimizer state names its parameters (torch.distributed.checkpoint's form,
    what FSDP2 and sharded checkpoints save) instead of numbering them (``Optimizer.state_dict``).
    """
    groups = optimizer_state.get("param_groups") or [{}]
    return any(isinstance(p, str) for g in groups for p in g.get("params", ()))


def named_optimizer_state(
    model: nn.Module, optimizer: torch.optim.Optimizer, state: Mapping[str, Any]
) -> dict[str, Any]:
    """``Optimizer.state_dict``'s numbered form (a DDP or one-device file) keyed by parameter
    name instead, the form FSDP2's ``set_optimizer_state_dict`` takes: the numbers count the
    optimizer's parameters group by group, in order."""
    names = {id(p): n for n, p in model.named_parameters()}
    order = [names[id(p)] for g in optimizer.param_groups for p in g["params"]]
    return {
        "state": {order[i]: v for i, v in state["state"].items()},
        "param_groups": [{**g, "params": [order[i] for i in g["params"]]}
                         for g in state["param_groups"]],
    }  # fmt: skip


def is_dtensor(t: Any) -> bool:
    from torch.distributed.tensor import DTensor

    return isinstance(t, DTensor)
