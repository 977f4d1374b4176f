"""Compile start-up of okc's training step: a cold inductor cache against a warm one.

``trainer.compile: true`` costs a compile before the first step. okc keeps inductor's cache in
its home folder (``~/.cache/okc/inductor``), so only the first run of a model pays the full
price. This measures both in fresh processes, each timing ``okc.fit`` from the call to the end
of its first optimizer steps (the compile happens inside the first step): once with an empty
cache folder (cold), then ``--repeats`` times with the folder the cold run filled (warm), and
reports warm / cold (the target is at most 0.2): of the whole fit call, and of the seconds
compiling adds to it (each minus the same fit run eager, which builds the model and data too).

    .venv/bin/python perf/bench_compile.py [--model resnet10t] [--batch-size 32] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def child(args: argparse.Namespace) -> None:
    """In a fresh process: fit ``--steps`` steps with compile on; print the seconds it took."""
    import okc
    from okc.config.load import experiment_from_data

    size = 32
    data = {
        "task": {"name": "ClassificationTask", "params": {
            "backbone_name": args.model, "pooling_name": "Pooling",
            "head_name": "ClassificationHead", "head_params": {"num_classes": 10}}},
        "joint_loss": {"losses": [{"name": "CrossEntropyLoss",
                                   "mapping": {"input": "prediction", "target": "target"}}]},
        "optimization": [{"optimizer": {"name": "SGD", "params": {"lr": 0.01}}}],
        "data": {"TRAIN": [{
            "dataset": {"name": "Shapes", "params": {
                "num_samples": args.batch_size * (args.steps + 1), "image_size": size}},
            "dataloader": {"batch_size": args.batch_size, "drop_last": True}}]},
        "trainer": {"compile": not args.eager, "max_steps": args.steps, "max_epochs": 1,
                    "enable_checkpointing": False, "enable_progress_bar": False,
                    "num_sanity_val_steps": 0},
        "logger": {"log_dir": args.logs, "experiment_name": "bench_compile"},
        "seed_params": {"seed": 0},
    }  # fmt: skip
    exp = experiment_from_data(data, name="bench_compile")
    start = time.perf_counter()
    okc.fit(exp)
    print(json.dumps({"seconds": time.perf_counter() - start}))


def run(args: argparse.Namespace, cache: Path, logs: str, *, eager: bool = False) -> float:
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(cache)}
    cmd = [sys.executable, __file__, "--child", "--model", args.model, "--batch-size",
           str(args.batch_size), "--steps", str(args.steps), "--logs", logs,
           *(["--eager"] if eager else [])]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=args.timeout)
    if done.returncode != 0:
        raise SystemExit(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])["seconds"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="resnet10t")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2, help="warm runs")
    parser.add_argument("--timeout", type=int, default=1200)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--eager", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--logs", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args)
        return
    with tempfile.TemporaryDirectory() as tmp:
        cache, logs = Path(tmp) / "inductor", str(Path(tmp) / "logs")
        eager = run(args, cache, logs, eager=True)
        cold = run(args, cache, logs)
        warm = [run(args, cache, logs) for _ in range(args.repeats)]
    median = statistics.median(warm)
    added_cold, added_warm = cold - eager, median - eager
    print(f"{args.model}, batch {args.batch_size}, {args.steps} steps, fit with compile on, "
          f"load average {os.getloadavg()[0]:.2f}")  # fmt: skip
    print(f"cold cache: {cold:.1f} s; warm cache: {', '.join(f'{w:.1f}' for w in warm)} s")
    print(f"the same fit eager: {eager:.1f} s; compile adds {added_cold:.1f} s cold, "
          f"{added_warm:.1f} s warm")  # fmt: skip
    print(
        f"warm / cold: {median / cold:.2f} of the whole fit, {added_warm / added_cold:.2f} of "
        "what compiling adds (target <= 0.20)"
    )


if __name__ == "__main__":
    main()
