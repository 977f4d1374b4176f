"""Strategies on two real gloo processes: FSDP2 accumulates locally on micro-steps (no
reduce-scatter until the step that ends the accumulation) and trains to DDP's weights; and the
choice of strategy from the trainer settings."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from okc.config.schema import Trainer
from okc.engine.distributed import DistEnv
from okc.engine.strategy import (
    DDPStrategy,
    FSDPStrategy,
    SingleDeviceStrategy,
    Strategy,
    select_strategy,
)
from okc.errors import ConfigError

ACCUMULATE, STEPS = 2, 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init_group(rank: int, world_size: int, port: int) -> DistEnv:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size
    )
    return DistEnv(device=torch.device("cpu"), rank=rank, world_size=world_size)


def tiny_model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3))


def batches(rank: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """This rank's micro-batches (a different half of the data on each rank)."""
    g = torch.Generator().manual_seed(100 + rank)
    return [(torch.randn(4, 6, generator=g), torch.randint(0, 3, (4,), generator=g))
            for _ in range(ACCUMULATE * STEPS)]  # fmt: skip


def train(strategy: Strategy, rank: int, probe: list[str]) -> dict[str, torch.Tensor]:
    """The loop's accumulation as ``Loop._train_step`` runs it, through ``strategy``; records
    in ``probe`` after each backward whether the model's own gradients were written (FSDP2
    writes its sharded ``.grad`` only by reduce-scattering)."""
    model = tiny_model()
    wrapped = strategy.wrap(model, shard_units=[model[0], model[2]])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for i, (x, y) in enumerate(batches(rank)):
        boundary = (i + 1) % ACCUMULATE == 0
        with strategy.gradient_sync(wrapped, enabled=boundary):
            loss = nn.functional.cross_entropy(wrapped(x), y)
            (loss / ACCUMULATE).backward()
        probe.append("synced" if any(p.grad is not None for p in model.parameters()) else "local")
        if boundary:
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    return strategy.model_state(model)  # whole tensors (FSDP2 gathers them)


def fsdp_and_ddp_worker(rank: int, world_size: int, port: int, out: str) -> None:
    env = init_group(rank, world_size, port)
    fsdp_probe: list[str] = []
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fsdp = train(FSDPStrategy(env), rank, fsdp_probe)
    reduce_scatters = sum(e.count for e in prof.key_averages() if "reduce_scatter" in e.key)
    ddp = train(DDPStrategy(env), rank, [])
    if rank == 0:
        torch.save({"fsdp": fsdp, "ddp": ddp, "probe": fsdp_probe,
                    "reduce_scatters": reduce_scatters}, out)  # fmt: skip
    dist.destroy_process_group()


@pytest.mark.distributed
def test_fsdp_accumulates_without_reduce_scatter_and_matches_ddp(tmp_path: Path) -> None:
    out = tmp_path / "weights.pt"
    mp.spawn(fsdp_and_ddp_worker, args=(2, free_port(), str(out)), nprocs=2)
    got = torch.load(out, weights_only=True)
    # the micro-step's backward left no gradient on the (sharded) parameters: nothing was
    # reduce-scattered; the boundary's backward did reduce-scatter the summed gradients
    assert got["probe"] == ["local", "synced"] * STEPS
    # one reduce-scatter per FSDP2 unit (2 Linear layers; the root has no parameters of its
    # own) per optimizer step, none for the micro-steps
    assert got["reduce_scatters"] == 2 * STEPS
    assert got["fsdp"].keys() == got["ddp"].keys()
    for key, value in got["ddp"].items():
        assert torch.allclose(got["fsdp"][key], value, atol=1e-6), key
    assert not torch.equal(got["ddp"]["0.weight"], tiny_model()[0].weight)  # it trained


# --- choosing one ---------------------------------------------------------------------------------


def test_the_strategy_is_chosen_once_from_the_trainer() -> None:
    cpu = torch.device("cpu")
    one, two = DistEnv(cpu), DistEnv(cpu, world_size=2)
    assert type(select_strategy(Trainer(), one)) is SingleDeviceStrategy
    assert type(select_strategy(Trainer(), two)) is DDPStrategy
    assert type(select_strategy(Trainer(strategy="fsdp"), two)) is FSDPStrategy
    assert select_strategy(Trainer(strategy="fsdp"), two).sharded_checkpoints
    assert not select_strategy(Trainer(strategy="ddp"), two).sharded_checkpoints
    with pytest.warns(UserWarning, match="trainer.strategy=fsdp has no effect"):
        assert type(select_strategy(Trainer(strategy="fsdp"), one)) is SingleDeviceStrategy
    with pytest.warns(UserWarning, match="trainer.sync_batchnorm=True has no effect"):
        select_strategy(Trainer(sync_batchnorm=True), one)
    with pytest.warns(UserWarning, match="checkpoint_async has no effect with ddp"):
        select_strategy(Trainer(checkpoint_async=True), two)
    with pytest.raises(ConfigError, match="trainer.strategy.*2 were started"):
        select_strategy(Trainer(strategy="single_device"), two)


def test_single_device_collectives_are_identities() -> None:
    single = SingleDeviceStrategy(DistEnv(torch.device("cpu")))
    values = {"loss": torch.tensor(2.0)}
    assert single.all_reduce_mean(values) is values
    assert single.all_reduce_flag(True) and not single.all_reduce_flag(False)
    assert single.broadcast_object({"a": 1}) == {"a": 1}
    model = nn.Linear(2, 2)
    assert single.wrap(model) is model
