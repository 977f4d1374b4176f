"""Training images/s of okc's loop against a hand-written PyTorch loop doing the same work.

Why: the loop's bookkeeping (callbacks, the non-finite guard, loss sums, logging, the precision
object) must cost next to nothing next to the step itself. This measures it as a ratio taken in
one process, so the machine's speed cancels out.

Both sides train the same model (``build_model``, the same initial weights) with AdamW and
CrossEntropyLoss, at the same batch size, image size, precision and compile setting, on the same
batches: each side has its own okc ``DataPipeline`` of the same data item and seed (Shapes, threaded
loader, Kornia flip + pad-crop + normalize on the device). The same data code on both sides keeps
data loading out of the difference, so the ratio isolates the loop.

- okc runs its public path, ``Loop(experiment).fit()``, with checkpointing, the progress bar,
  validation and schedulers off, no metrics (``--metrics`` adds a TRAIN Accuracy), one epoch, and
  ``train/loss_step`` logged to CSV/JSONL every ``--log-every`` steps.
- The hand-written loop is what one writes without a framework: forward and loss (compiled with
  ``--compile``) under autocast, backward, ``step``, ``zero_grad``; ``.item()`` of the loss every
  ``--log-every`` steps (the same sync); with ``--metrics``, the same torchmetrics update.

Timing: okc's loop runs in this thread; a callback (okc's one extra, near-empty hook per step)
pauses it at round boundaries and runs the hand-written loop there, so the sides alternate
(``--repeats`` rounds of ``--steps`` steps each, after ``--warmup`` steps that include compiling)
and a busy neighbour slows both alike. Each side reports its best and median round; the ratio
is okc / hand-written (the median of per-round ratios, and best over best), 1.0 meaning no
overhead. Both sides must lower the loss on a fixed batch, so a broken side cannot look fast.

    .venv/bin/python perf/bench_step.py [--model resnet10t] [--batch-size 64] [--steps 20]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import math
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from okc.config.load import experiment_from_data
from okc.config.schema import Experiment, Phase
from okc.data import build_pipeline
from okc.data.collate import collate
from okc.engine.hooks import Callback, RunView
from okc.engine.loop import Loop
from okc.models import build_model

NUM_CLASSES = 10


def experiment(args: argparse.Namespace, log_dir: str) -> Experiment:
    """The okc side's experiment; the hand-written side reads its model and data from it."""
    size = args.image_size
    num_steps = args.warmup + args.steps * args.repeats
    metrics = [
        {
            "name": "Accuracy",
            "params": {"task": "multiclass", "num_classes": NUM_CLASSES},
            "mapping": {"preds": "prediction", "target": "target"},
            "phases": ["TRAIN"],
        }
    ]
    data = {
        "task": {
            "name": "ClassificationTask",
            "params": {
                "backbone_name": args.model,
                "pooling_name": "Pooling",
                "head_name": "ClassificationHead",
                "head_params": {"num_classes": NUM_CLASSES},
            },
        },
        "joint_loss": {
            "losses": [
                {
                    "name": "CrossEntropyLoss",
                    "tag": "ce",
                    "mapping": {"input": "prediction", "target": "target"},
                }
            ]
        },
        "optimization": [{"optimizer": {"name": "AdamW", "params": {"lr": args.lr}}}],
        "metrics": metrics if args.metrics else [],
        "data": {
            "TRAIN": [
                {
                    "dataset": {
                        "name": "Shapes",
                        # One epoch holds every step: no epoch boundary inside a timed round.
                        "params": {
                            "num_samples": args.batch_size * (num_steps + 2),
                            "image_size": size,
                            "num_classes": NUM_CLASSES,
                        },
                        "transform": [
                            {
                                "name": "Normalize",
                                "params": {"mean": [0.5] * 3, "std": [0.25] * 3},
                            }
                        ],
                        "augment": [
                            {"name": "HorizontalFlip"},
                            {
                                "name": "RandomCrop",
                                "params": {"height": size, "width": size, "padding": 2},
                            },
                        ],
                    },
                    "dataloader": {
                        "batch_size": args.batch_size,
                        "shuffle": True,
                        "drop_last": True,  # static shapes: no recompile on a short last batch
                        "num_workers": args.num_workers,
                    },
                }
            ]
        },
        "trainer": {
            "accelerator": args.device,
            "precision": args.precision,
            "compile": args.compile,
            "max_epochs": 1,
            "max_steps": num_steps,
            "log_every_n_steps": args.log_every,
            "enable_checkpointing": False,
            "enable_progress_bar": False,
            "num_sanity_val_steps": 0,
        },
        "logger": {"log_dir": log_dir, "experiment_name": "bench_step"},
        "seed_params": {"seed": 0},
    }
    return experiment_from_data(data, name="bench_step")


class HandWritten:
    """The baseline: a plain PyTorch training loop over its own pipeline of the same data."""

    def __init__(
        self, exp: Experiment, args: argparse.Namespace, *, device: torch.device, seed: int
    ) -> None:
        self.device = device
        self.model = build_model(exp.task.params).to(device)
        self.loss = nn.CrossEntropyLoss()
        self.step_fn: Callable[..., tuple[Tensor, Tensor]] = _ForwardLoss(self.model, self.loss)
        if args.compile:
            self.step_fn = torch.compile(self.step_fn)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=args.lr)
        self.autocast = autocast(args.precision, device)
        self.log_every = args.log_every
        self.accuracy = None
        if args.metrics:
            import torchmetrics

            self.accuracy = torchmetrics.Accuracy(task="multiclass", num_classes=NUM_CLASSES)
            self.accuracy.to(device)
        self.pipeline = build_pipeline(
            exp.data.TRAIN[0], phase=Phase.TRAIN, seed=seed, device=device
        )
        self.pipeline.set_epoch(0)
        self.batches = iter(self.pipeline)
        self.num_steps = 0
        self.losses: list[Tensor] = []
        self.logged = float("nan")

    def run(self, num_steps: int) -> None:
        self.model.train()
        for _ in range(num_steps):
            batch = self.pipeline.to_device(next(self.batches))
            image, target = batch["image"], batch["target"]
            with self.autocast:
                loss, logits = self.step_fn(image, target)
            loss.backward()
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            if self.accuracy is not None:
                self.accuracy.update(logits.detach(), target)
            self.losses.append(loss.detach())
            self.num_steps += 1
            if self.num_steps % self.log_every == 0:
                self.logged = loss.item()  # sync point, as okc's logging step


class _ForwardLoss(nn.Module):
    def __init__(self, model: nn.Module, loss: nn.Module) -> None:
        super().__init__()
        self.model, self.loss = model, loss

    def forward(self, image: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        logits = self.model(image)
        return self.loss(logits, target), logits


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    if precision == "bf16-mixed":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Alternate(Callback):
    """Times okc's rounds and runs the hand-written ones between them, from okc's own hook."""

    def __init__(self, hand: HandWritten, args: argparse.Namespace, device: torch.device):
        self.hand, self.args, self.device = hand, args, device
        self.okc_seconds: list[float] = []
        self.hand_seconds: list[float] = []
        self._start = 0.0

    def on_train_batch_end(self, run: RunView, logs: Mapping[str, float] | None) -> None:
        done = run.global_step - self.args.warmup
        if done < 0 or done % self.args.steps:
            return
        synchronize(self.device)
        if done == 0:
            self.hand.run(self.args.warmup)  # okc is warm (and compiled); now the baseline
        else:
            self.okc_seconds.append(time.perf_counter() - self._start)
            self.hand_seconds.append(self._time_hand())
        synchronize(self.device)
        self._start = time.perf_counter()

    def _time_hand(self) -> float:
        start = time.perf_counter()
        self.hand.run(self.args.steps)
        synchronize(self.device)
        return time.perf_counter() - start


def probe_loss(model: nn.Module, batch: Mapping[str, Tensor], ctx: Any) -> float:
    """Training-mode loss on a fixed batch, on a copy (BatchNorm statistics stay untouched)."""
    probe = copy.deepcopy(model).train()
    with torch.no_grad(), ctx:
        return float(nn.functional.cross_entropy(probe(batch["image"]), batch["target"]))


def check_trained(name: str, before: float, after: float) -> str | None:
    if not math.isfinite(after):
        return f"{name}: the loss is {after}"
    if after >= before:
        return f"{name}: the loss did not fall ({before:.3f} -> {after:.3f})"
    return None


def report(args: argparse.Namespace, okc_s: list[float], hand_s: list[float]) -> None:
    images = args.steps * args.batch_size
    rows = {"hand-written": hand_s, "okc": okc_s}
    print(f"{'':14}{'best img/s':>12}{'median img/s':>14}{'median ms/step':>16}")
    for name, seconds in rows.items():
        best, median = images / min(seconds), images / statistics.median(seconds)
        ms = statistics.median(seconds) / args.steps * 1e3
        print(f"{name:14}{best:12.0f}{median:14.0f}{ms:16.1f}")
    paired = statistics.median(h / o for o, h in zip(okc_s, hand_s, strict=True))
    best = min(hand_s) / min(okc_s)
    print(f"ratio okc / hand-written: {paired:.3f} (median of rounds), {best:.3f} (best)")


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    with tempfile.TemporaryDirectory() as log_dir:
        exp = experiment(args, log_dir)
        loop = Loop(exp)
        device = loop.device
        hand = HandWritten(exp, args, device=device, seed=loop.seed)
        hand.model.load_state_dict(loop.task.model.state_dict())  # the same starting point
        probe = hand.pipeline.to_device(
            collate([hand.pipeline.dataset[i] for i in range(args.batch_size)])
        )
        ctx = autocast(args.precision, device)
        before = probe_loss(hand.model, probe, ctx)
        timer = Alternate(hand, args, device)
        loop.callbacks.append(timer)
        print(
            f"{args.model}, batch {args.batch_size}, {args.image_size}px, {args.precision}, "
            f"compile {args.compile}, {device}, torch threads {torch.get_num_threads()}, "
            f"{args.num_workers} loader workers, log every {args.log_every}, "
            f"metrics {'on' if args.metrics else 'off'}; {args.repeats} rounds x {args.steps} "
            f"steps after {args.warmup} warm-up; load average {load:.2f} at start"
        )
        result = loop.fit()
    if result.global_step != args.warmup + args.steps * args.repeats:
        raise SystemExit(f"okc stopped at step {result.global_step}")
    report(args, timer.okc_seconds, timer.hand_seconds)
    models = {"okc": loop.task.model, "hand-written": hand.model}
    after = {name: probe_loss(model, probe, ctx) for name, model in models.items()}
    print("probe loss " + ", ".join(f"{k} {before:.3f} -> {v:.3f}" for k, v in after.items()))
    problems = [check_trained(name, before, loss) for name, loss in after.items()]
    if not bool(torch.isfinite(torch.stack(hand.losses)).all()):  # okc's own guard checks okc
        problems.append("hand-written: a non-finite loss")
    if any(problems):
        raise SystemExit("a side did not train: " + "; ".join(p for p in problems if p))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="resnet10t", help="timm name, e.g. test_resnet")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=20, help="steps per timed round")
    parser.add_argument("--repeats", type=int, default=7, help="timed rounds per side")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps (compile included)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--compile", action="store_true", help="compile both sides")
    parser.add_argument("--precision", choices=["32", "bf16-mixed"], default="32")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--num-workers", type=int, default=2, help="loader threads per side")
    parser.add_argument("--log-every", type=int, default=50, help="log_every_n_steps")
    parser.add_argument("--metrics", action="store_true", help="a TRAIN Accuracy on both sides")
    parser.add_argument("--lr", type=float, default=2e-3)
    args = parser.parse_args()
    if min(args.steps, args.repeats, args.warmup, args.log_every) < 1:
        parser.error("--steps, --repeats, --warmup and --log-every must be at least 1")
    return args


if __name__ == "__main__":
    main()
