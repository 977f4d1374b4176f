"""Peak memory per rank while saving an FSDP2 checkpoint: sharded (each rank writes its own
shards through torch.distributed.checkpoint) against the whole-state gather okc did before
(every rank gathers the full model and optimizer state; the main one writes one file).

Two gloo ranks on the CPU train a stack of ``--layers`` Linear(``--width``) layers one Adam
step (so the optimizer holds its two moments), then save once through okc's Checkpointer with
the loop's model and optimizer parts. A thread samples, every 2 ms, the bytes the process has
allocated (glibc's ``mallinfo2``: torch's CPU tensors come from malloc) and its resident memory;
resident memory alone under-reports, because memory freed earlier (sharding the model) stays
resident and is reused. Each mode runs in fresh processes. Reported per rank: the allocated
memory before the save, the peak above it during the save, the same for resident memory, and
the save's seconds; then sharded / full ratios.

    .venv/bin/python perf/bench_checkpoint_memory.py [--layers 16] [--width 2048]
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import socket
import tempfile
import threading
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks",
                "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]  # fmt: skip


_LIBC = ctypes.CDLL("libc.so.6")
_LIBC.mallinfo2.restype = _MallInfo2


def allocated() -> int:
    """Bytes in use from malloc: small blocks in the arenas plus mmapped large ones."""
    info = _LIBC.mallinfo2()
    return info.uordblks + info.hblkhd


class PeakSampler:
    """The highest allocated and resident memory seen while the block runs."""

    def __enter__(self) -> PeakSampler:
        self.peak, self.peak_rss, self._stop = allocated(), rss(), threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        self.peak, self.peak_rss = max(self.peak, allocated()), max(self.peak_rss, rss())

    def _run(self) -> None:
        while not self._stop.wait(0.002):
            self._sample()

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


def worker(rank: int, args: argparse.Namespace, port: int, mode: str, out: str) -> None:
    from okc.engine.checkpoint import Checkpointer, ModelState
    from okc.engine.distributed import DistEnv
    from okc.engine.state import OptimizationState
    from okc.engine.strategy import FSDPStrategy
    from okc.optim.build import OptimizerPair

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=2)  # fmt: skip
    strategy = FSDPStrategy(DistEnv(torch.device("cpu"), rank=rank, world_size=2))
    torch.manual_seed(0)
    model = nn.Sequential(*(nn.Linear(args.width, args.width) for _ in range(args.layers)))
    wrapped = strategy.wrap(model, shard_units=list(model))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    wrapped(torch.randn(2, args.width)).sum().backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    checkpointer = Checkpointer(is_main=rank == 0, barrier=strategy.barrier,
                                sharded=mode == "sharded")  # fmt: skip
    checkpointer.add("model", ModelState(model, strategy=strategy), weights=True)
    optimization = OptimizationState(model, [OptimizerPair(optimizer)], strategy=strategy)
    checkpointer.add("optimization", optimization)
    strategy.barrier()
    before, before_rss = allocated(), rss()
    start = time.perf_counter()
    with PeakSampler() as sampler:
        checkpointer.save(Path(out) / f"{mode}.ckpt")
    seconds = time.perf_counter() - start
    row = {"mode": mode, "rank": rank, "before_mb": before / 2**20,
           "peak_above_mb": (sampler.peak - before) / 2**20,
           "rss_peak_above_mb": (sampler.peak_rss - before_rss) / 2**20,
           "seconds": seconds}  # fmt: skip
    Path(out, f"{mode}-{rank}.json").write_text(json.dumps(row))
    dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=16)
    parser.add_argument("--width", type=int, default=2048)
    args = parser.parse_args()
    params = args.layers * (args.width * args.width + args.width)
    print(f"model: {params / 1e6:.1f}M parameters ({params * 4 / 2**20:.0f} MB fp32), Adam; "
          "2 gloo ranks")  # fmt: skip
    rows = {}
    with tempfile.TemporaryDirectory() as out:
        for mode in ("full", "sharded"):
            mp.spawn(worker, args=(args, free_port(), mode, out), nprocs=2)
            for rank in range(2):
                row = json.loads(Path(out, f"{mode}-{rank}.json").read_text())
                rows[mode, rank] = row
                print(f"{mode:8s} rank {rank}: allocated before {row['before_mb']:6.0f} MB, peak "
                      f"above {row['peak_above_mb']:6.0f} MB (resident: "
                      f"{row['rss_peak_above_mb']:6.0f} MB), {row['seconds']:.2f} s")  # fmt: skip
    for rank in range(2):
        full, sharded = rows["full", rank], rows["sharded", rank]
        ratio = sharded["peak_above_mb"] / max(full["peak_above_mb"], 1e-9)
        print(f"rank {rank}: sharded / full peak above = {ratio:.2f}, "
              f"time = {sharded['seconds'] / full['seconds']:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
