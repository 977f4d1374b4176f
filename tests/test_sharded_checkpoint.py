"""Sharded checkpoints (FSDP2 through torch.distributed.checkpoint) with the loop's real parts:
saved by 2 ranks, resumed on 2 ranks and on 1; a 1-rank file resumed on 2 ranks; every resume
continues with the same losses and weights as the run that did not stop."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from test_strategy import free_port, init_group
from torch import nn

from okc.engine.checkpoint import Checkpointer, ModelState, load_weights, read_checkpoint
from okc.engine.distributed import DistEnv
from okc.engine.state import OptimizationState, Progress
from okc.engine.strategy import DDPStrategy, FSDPStrategy, SingleDeviceStrategy, Strategy
from okc.errors import OkcError
from okc.optim.build import OptimizerPair

SAVE_AT, STEPS = 2, 4


class Run:
    """A model, Adam with a StepLR, and a Checkpointer holding the parts the loop registers."""

    def __init__(self, strategy: Strategy, *, seed: int, async_save: bool = False) -> None:
        torch.manual_seed(seed)
        self.strategy = strategy
        self.model = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3))
        self.wrapped = strategy.wrap(self.model, shard_units=[self.model[0], self.model[2]])
        optimizer = torch.optim.Adam(self.model.parameters(), lr=0.05)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, 1, gamma=0.7)
        self.pair = OptimizerPair(optimizer, scheduler)
        self.progress = Progress()
        self.checkpointer = Checkpointer(
            is_main=strategy.is_main, barrier=strategy.barrier,
            sharded=strategy.sharded_checkpoints, async_save=async_save,
        )  # fmt: skip
        self.checkpointer.add("model", ModelState(self.model, strategy=strategy), weights=True)
        self.checkpointer.add("progress", self.progress, weights=True)
        self.checkpointer.add(
            "optimization", OptimizationState(self.model, [self.pair], strategy=strategy)
        )

    def train(self, steps: range) -> list[float]:
        """The global batch of each step, split over the ranks; the mean loss of each step."""
        losses = []
        for step in steps:
            x, y = global_batch(step)
            env = self.strategy.env
            part = slice(env.rank * len(x) // env.world_size,
                         (env.rank + 1) * len(x) // env.world_size)  # fmt: skip
            loss = nn.functional.cross_entropy(self.wrapped(x[part]), y[part])
            loss.backward()
            self.pair.optimizer.step()
            self.pair.optimizer.zero_grad(set_to_none=True)
            self.pair.scheduler.step()
            self.progress.global_step += 1
            losses.append(float(self.strategy.all_reduce_mean({"l": loss.detach()})["l"]))
        return losses

    def weights(self) -> dict[str, torch.Tensor]:
        return self.strategy.model_state(self.model)  # whole tensors


def global_batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(step)
    return torch.randn(8, 6, generator=g), torch.randint(0, 3, (8,), generator=g)


def single() -> SingleDeviceStrategy:
    return SingleDeviceStrategy(DistEnv(torch.device("cpu")))


def two_ranks_worker(rank: int, world_size: int, port: int, folder: str) -> None:
    env = init_group(rank, world_size, port)
    root = Path(folder)
    # the run that stops: a sharded (asynchronous) save, then on without stopping
    ref = Run(FSDPStrategy(env), seed=0, async_save=True)
    ref.train(range(SAVE_AT))
    saved = ref.weights()
    ref.checkpointer.save(root / "two.ckpt")
    losses = ref.train(range(SAVE_AT, STEPS))
    ref.checkpointer.close()
    # resumed on 2 ranks from its shards, into a model initialised differently
    resumed = Run(FSDPStrategy(env), seed=7)
    resumed.checkpointer.load_for_resume(root / "two.ckpt")
    resumed_losses = resumed.train(range(SAVE_AT, STEPS))
    # resumed by 2 DDP ranks (whole tensors on each) from the same shards
    ddp = Run(DDPStrategy(env), seed=11)
    ddp.checkpointer.load_for_resume(root / "two.ckpt")
    ddp_losses = ddp.train(range(SAVE_AT, STEPS))
    # resumed on 2 ranks from the single process's file (saved with 1, resumed with 2)
    from_one = Run(FSDPStrategy(env), seed=9)
    from_one.checkpointer.load_for_resume(root / "one.ckpt")
    from_one_losses = from_one.train(range(SAVE_AT, STEPS))
    results = {"saved": saved, "losses": losses, "weights": ref.weights(),
               "resumed_losses": resumed_losses, "resumed_weights": resumed.weights(),
               "ddp_losses": ddp_losses, "ddp_weights": ddp.weights(),
               "from_one_losses": from_one_losses, "from_one_weights": from_one.weights(),
               "lr": resumed.pair.optimizer.param_groups[0]["lr"]}  # fmt: skip
    if rank == 0:
        torch.save(results, root / "results.pt")
    dist.destroy_process_group()


def assert_close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], **tol: float) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], **tol), key


@pytest.mark.distributed
def test_sharded_checkpoint_resumes_on_two_ranks_and_on_one(tmp_path: Path) -> None:
    # one process: trains, saves a single file, and goes on (the reference for 1 -> 2 ranks)
    one = Run(single(), seed=0)
    one.train(range(SAVE_AT))
    one.checkpointer.save(tmp_path / "one.ckpt")
    one_losses = one.train(range(SAVE_AT, STEPS))
    mp.spawn(two_ranks_worker, args=(2, free_port(), str(tmp_path)), nprocs=2)
    got = torch.load(tmp_path / "results.pt", weights_only=True)

    folder = tmp_path / "two.ckpt"
    names = sorted(p.name for p in folder.iterdir())
    assert names == [".metadata", "__0_0.distcp", "__1_0.distcp", "okc.pt"]  # a shard per rank
    assert not list(tmp_path.glob(".*.partial"))
    head = read_checkpoint(folder)
    assert head["sharded"] == ["model", "optimization"] and head["progress"]["global_step"] == 2

    # 2 -> 2: the same losses and weights as the run that did not stop
    assert got["resumed_losses"] == got["losses"]
    assert_close(got["resumed_weights"], got["weights"], rtol=0, atol=0)
    assert got["lr"] == pytest.approx(0.05 * 0.7**STEPS)  # the scheduler came back too
    # 2 FSDP2 ranks -> 2 DDP ranks
    assert got["ddp_losses"] == pytest.approx(got["losses"], abs=1e-6)
    assert_close(got["ddp_weights"], got["weights"], atol=1e-6)
    # 2 -> 1: one process on the whole batch continues with the same losses and weights
    alone = Run(single(), seed=3)
    alone.checkpointer.load_for_resume(folder)
    assert alone.progress.global_step == SAVE_AT
    assert alone.train(range(SAVE_AT, STEPS)) == pytest.approx(got["losses"], abs=1e-6)
    assert_close(alone.weights(), got["weights"], atol=1e-6)
    # 1 -> 2: a single process's file resumed by 2 FSDP2 ranks
    assert got["from_one_losses"] == pytest.approx(one_losses, abs=1e-6)
    assert_close(got["from_one_weights"], one.weights(), atol=1e-6)
    # evaluation and export read the folder's weights straight into a whole model
    model = Run(single(), seed=4).model
    load_weights(model, folder)
    assert_close(model.state_dict(), got["saved"], rtol=0, atol=0)


def test_an_incomplete_folder_is_not_a_checkpoint(tmp_path: Path) -> None:
    run = Run(single(), seed=0)
    run.checkpointer = Checkpointer(sharded=True)  # one process can write the folder form too
    run.checkpointer.add("model", ModelState(run.model), weights=True)
    run.checkpointer.save(tmp_path / "w.ckpt", weights_only=True)
    other = Run(single(), seed=1).model
    load_weights(other, tmp_path / "w.ckpt")
    assert_close(other.state_dict(), run.model.state_dict(), rtol=0, atol=0)
    (tmp_path / "w.ckpt" / "okc.pt").unlink()  # what a save cut short leaves
    with pytest.raises(OkcError, match="not a complete sharded checkpoint"):
        load_weights(other, tmp_path / "w.ckpt")
    with pytest.raises(OkcError, match="does not fit"):
        load_weights(nn.Linear(6, 3), _saved(tmp_path))


def _saved(tmp_path: Path) -> Path:
    checkpointer = Checkpointer(sharded=True)
    checkpointer.add("model", ModelState(nn.Linear(5, 3)), weights=True)
    return checkpointer.save(tmp_path / "other.ckpt", weights_only=True)


def test_load_checkpoint_reads_a_sharded_folder_whole(tmp_path: Path) -> None:
    from okc.config.schema import LoadCheckpoint
    from okc.engine.weights import merge_load_checkpoint

    source = Run(single(), seed=0).model
    checkpointer = Checkpointer(sharded=True)
    checkpointer.add("model", ModelState(source), weights=True)
    folder = checkpointer.save(tmp_path / "fsdp.ckpt", weights_only=True)
    target = Run(single(), seed=1).model
    spec = LoadCheckpoint(base_ckpt_path=str(folder), exclude_keys=("2",))
    loaded = merge_load_checkpoint(target, spec)
    assert loaded is not None and sorted(loaded.loaded) == ["0.bias", "0.weight"]
    assert torch.equal(target[0].weight, source[0].weight)
    assert not torch.equal(target[2].weight, source[2].weight)  # excluded: kept its own
