"""Inference latency of exported models against torch eager, at several batch sizes.

The runners are timed in alternating rounds (one call of each per round) and each reports its
median: on a shared machine a slow patch then hits every runner alike instead of whichever was
being timed, and the median ignores the odd stall. Each runner is warmed up first (onnxruntime
and AOTInductor allocate on their first calls). Every runner gets the same number of threads
(torch's intra-op count; onnxruntime sessions are opened with it), so the table compares the
formats, not thread pools.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

Runner = Callable[[Tensor], Any]


def onnx_runner(path: str | Path, *, threads: int | None = None) -> Runner:
    """An onnxruntime session on the CPU with ``threads`` intra-op threads (default: torch's)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x.numpy()})


def measure_latency(
    runners: Mapping[str, Runner],
    example: Callable[[int], Tensor],
    *,
    batch_sizes: Sequence[int] = (1, 32),
    rounds: int = 20,
    warmup: int = 3,
) -> dict[str, dict[int, float]]:
    """``{runner: {batch size: median milliseconds per call}}``; ``example(b)`` makes a batch."""
    times: dict[str, dict[int, list[float]]] = {name: {} for name in runners}
    with torch.inference_mode():
        for batch_size in batch_sizes:
            x = example(batch_size)
            for run in runners.values():
                for _ in range(warmup):
                    run(x)
            for _ in range(rounds):
                for name, run in runners.items():
                    start = time.perf_counter()
                    run(x)
                    times[name].setdefault(batch_size, []).append(time.perf_counter() - start)
    return {
        name: {b: 1000 * statistics.median(ts) for b, ts in by_batch.items()}
        for name, by_batch in times.items()
    }
