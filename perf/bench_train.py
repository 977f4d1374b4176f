"""Training images/s of okc against the compute limit, hand-written loops and Lightning.

Every side trains the same timm model on the same CIFAR-10 arrays with the same recipe: SGD with
Nesterov momentum, cross-entropy with label smoothing 0.1, and pad-4 reflect random crop +
horizontal flip + normalize. The sides:

- ``limit``: one fixed pre-made batch already on the device; forward, backward, step. Nothing
  moves, nothing is augmented: no training loop on this machine can go faster with this model
  in this memory format (``--channels-last``: okc's ``trainer.channels_last`` rule by default,
  the same for ``limit``, ``eager``, ``compiled`` and ``okc``; ``lightning`` keeps TorchOk's NCHW).
- ``eager``: a hand-written loop as one writes it without a framework: index a random batch of
  the in-memory uint8 array, augment it with tensor ops, forward/backward/step.
- ``compiled``: the same loop with ``torch.compile(model)``.
- ``okc``: ``okc.fit`` on an experiment (okc's CIFAR10 dataset, pipeline, augmentation, loop).
- ``data``: okc's data pipeline alone for the ``okc`` side's experiment: read, batch, augment and
  normalize as ``okc.fit`` does (on ``--device``), no model. The table gives its rate against the
  fastest training side (the issue asks for 3x: data must never be what a step waits for).
- ``lightning``: PyTorch Lightning with albumentations in DataLoader worker processes, the way
  TorchOk trains (only when ``lightning`` and ``albumentations`` are installed:
  ``pip install -r perf/requirements.txt``; never an okc dependency).

One command, one process tree: each round runs every side once, in turn, each in a fresh
subprocess (so a side's threads, workers and allocator never outlive it), and a side reports
the images/s of its timed steps, after warm-up steps that absorb start-up and compilation.
Rounds interleave the sides, so a busy neighbour slows all of them alike. The table gives each
side's median round, peak memory (the process's max RSS; CUDA: max allocated) and the ratios
to ``limit`` and to ``lightning``.

Data: ``--cifar DIR`` (a folder holding the official ``cifar-10-python.tar.gz``) or, by default,
generated arrays of the same shape written as a CIFAR-format archive in a temporary folder.

    .venv/bin/python perf/bench_train.py --model resnet18 --batch-size 128
    .venv/bin/python perf/bench_train.py --tiny      # seconds: what tests/test_perf_scripts runs

``--recipe imagenet``: 224 px instead, on bench_data's generated ImageNet-like JPEGs with
TorchOk's classification_imagenet.yaml recipe (Resize 256, FancyPCA, flip, RandomCrop 224,
Normalize): sides ``limit``, ``okc`` (``--okc-workers``), ``okc_auto`` (``num_workers: auto``),
``lightning`` (albumentations + cv2 in ``--lightning-workers`` processes) and ``data``.

    .venv/bin/python perf/bench_train.py --recipe imagenet --model mobilenetv3_small_050 \
        --batch-size 64 --okc-workers 2 --sides limit,okc,okc_auto,lightning
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

SIDES = ("limit", "eager", "compiled", "okc", "lightning", "data")
EXTRA_SIDES = ("okc_auto",)  # okc with num_workers: auto whatever --okc-workers says
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_data: the ImageNet recipe
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)
NUM_CLASSES = 10


# --- data -----------------------------------------------------------------------------------------


def write_generated(folder: Path, num: int) -> Path:
    """Random CIFAR-format data (the official archive's layout), for runs without the real one."""
    import hashlib
    import io
    import pickle
    import tarfile

    rng = np.random.default_rng(0)
    per = -(-num // 5)
    archive = folder / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        files = {f"data_batch_{i}": per for i in range(1, 6)} | {"test_batch": 10}
        for name, n in files.items():
            content = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                       b"labels": [int(v) for v in rng.integers(0, NUM_CLASSES, n)]}  # fmt: skip
            data = pickle.dumps(content, protocol=2)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    (folder / "md5").write_text(hashlib.md5(archive.read_bytes()).hexdigest())
    return folder


def load_arrays(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """The training images (N, 32, 32, 3) uint8 and labels, read with okc's safe CIFAR reader."""
    from okc.data.datasets.cifar import CIFAR10

    _patch_md5(folder)
    dataset = CIFAR10(data_folder=str(folder), train=True)
    return dataset.images.permute(0, 2, 3, 1).numpy(), dataset.targets.numpy()


def _patch_md5(folder: Path) -> None:
    """Generated archives are not the official file: let okc's md5 check accept this one."""
    md5 = folder / "md5"
    if md5.is_file():
        import attrs

        from okc.data.datasets import cifar

        cifar.ARCHIVES["CIFAR10"] = attrs.evolve(cifar.ARCHIVES["CIFAR10"], md5=md5.read_text())


# --- what every side shares -----------------------------------------------------------------------


def make_model(args: argparse.Namespace, device: torch.device) -> nn.Module:
    """The model on ``device``; ``limit``, ``eager`` and ``compiled`` get okc's memory format (so
    ``okc / limit`` measures okc's overhead, not its layout), ``lightning`` TorchOk's NCHW."""
    import timm

    from okc.engine.distributed import DistEnv
    from okc.engine.strategy import SingleDeviceStrategy

    model = timm.create_model(args.model, num_classes=NUM_CLASSES).to(device)
    layout = SingleDeviceStrategy(DistEnv(device)).channels_last(args.channels_last, model,
                                                                 half=False)  # fmt: skip
    if layout and args.side != "lightning":
        model = model.to(memory_format=torch.channels_last)
    return model


def make_optimizer(model: nn.Module, args: argparse.Namespace) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, nesterov=True,
                           weight_decay=5e-4)  # fmt: skip


def augment(images: Tensor, generator: torch.Generator) -> Tensor:
    """Pad-4 reflect random crop + horizontal flip + normalize, on a uint8 (B,3,32,32) batch."""
    x = images.float().div_(255)
    b, _, h, w = x.shape
    padded = nn.functional.pad(x, (4, 4, 4, 4), mode="reflect")
    dy = torch.randint(0, 9, (b,), generator=generator)
    dx = torch.randint(0, 9, (b,), generator=generator)
    rows = (dy[:, None] + torch.arange(h))[:, None, :, None].expand(b, 3, h, w + 8)
    x = padded.gather(2, rows.to(x.device))
    cols = (dx[:, None] + torch.arange(w))[:, None, None, :].expand(b, 3, h, w)
    x = x.gather(3, cols.to(x.device))
    flip = torch.rand(b, generator=generator) < 0.5
    x = torch.where(flip.to(x.device)[:, None, None, None], x.flip(-1), x)
    mean = torch.tensor(MEAN, device=x.device)[:, None, None]
    std = torch.tensor(STD, device=x.device)[:, None, None]
    return (x - mean) / std


class Clock:
    """Wall and process CPU time (every thread of this process) between ``start`` and ``stop``.

    CPU seconds per image stay meaningful on a machine a neighbour keeps busy, where wall time
    does not: they count the work a side does, not the time it waited for a core.
    """

    def __init__(self, args: argparse.Namespace, device: torch.device) -> None:
        self.images = args.steps * args.batch_size
        self.device = device
        self.wall = self.cpu = 0.0

    def start(self) -> None:
        synchronize(self.device)
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def stop(self) -> dict[str, float]:
        synchronize(self.device)
        wall, cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu
        return {"images_per_s": self.images / wall, "cpu_ms_per_image": 1e3 * cpu / self.images}


def timed(steps: Iterator[None], args: argparse.Namespace, device: torch.device) -> dict:
    """Images/s (and CPU time per image) over ``args.steps`` steps after ``args.warmup``."""
    for _ in range(args.warmup):
        next(steps)
    clock = Clock(args, device)
    clock.start()
    for _ in range(args.steps):
        next(steps)
    return clock.stop()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --- the sides ------------------------------------------------------------------------------------


def side_limit(args: argparse.Namespace, folder: Path, device: torch.device) -> dict[str, float]:
    model, loss_fn = make_model(args, device).train(), _loss()
    optimizer = make_optimizer(model, args)
    g = torch.Generator().manual_seed(0)
    if args.recipe == "imagenet":  # the step does not depend on pixel values
        x = torch.randn(args.batch_size, 3, 224, 224, generator=g).to(device)
        y = torch.randint(0, NUM_CLASSES, (args.batch_size,), generator=g).to(device)
    else:
        images, labels = load_arrays(folder)
        batch = torch.from_numpy(images[: args.batch_size]).permute(0, 3, 1, 2)
        x = augment(batch, g).to(device)
        y = torch.from_numpy(labels[: args.batch_size]).long().to(device)

    def steps() -> Iterator[None]:
        while True:
            loss_fn(model(x), y).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            yield

    return timed(steps(), args, device)


def side_hand(args: argparse.Namespace, folder: Path, device: torch.device,
              *, compiled: bool) -> dict[str, float]:  # fmt: skip
    model, loss_fn = make_model(args, device).train(), _loss()
    optimizer = make_optimizer(model, args)
    forward = torch.compile(model) if compiled else model
    images, labels = load_arrays(folder)
    data = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()  # uint8 (N,3,32,32)
    targets = torch.from_numpy(labels).long()
    g = torch.Generator().manual_seed(0)

    def steps() -> Iterator[None]:
        while True:
            order = torch.randperm(len(data), generator=g)
            for start in range(0, len(order) - args.batch_size + 1, args.batch_size):
                index = order[start : start + args.batch_size]
                x = augment(data[index].to(device, non_blocking=True), g)
                y = targets[index].to(device, non_blocking=True)
                loss_fn(forward(x), y).backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                yield

    return timed(steps(), args, device)


def side_okc(args: argparse.Namespace, folder: Path, device: torch.device) -> dict[str, float]:
    import okc
    from okc.config.load import experiment_from_data
    from okc.engine.hooks import Callback, RunView
    from okc.engine.loop import Loop

    _patch_md5(folder)

    class Timer(Callback):
        def __init__(self) -> None:
            self.clock = Clock(args, device)
            self.result: dict[str, float] = {}

        def on_train_batch_end(self, run: RunView, logs: Any) -> None:
            if run.global_step == args.warmup:
                self.clock.start()
            elif run.global_step == args.warmup + args.steps:
                self.result = self.clock.stop()

    with tempfile.TemporaryDirectory() as logs:
        exp = experiment_from_data(okc_experiment(args, folder, logs, device), name="bench")
        timer = Timer()
        Loop(exp, callbacks=[timer]).fit()
    del okc
    return timer.result


def side_data(args: argparse.Namespace, folder: Path, device: torch.device) -> dict[str, float]:
    from okc.config.load import experiment_from_data
    from okc.config.schema import Phase
    from okc.data import build_pipeline

    _patch_md5(folder)
    with tempfile.TemporaryDirectory() as logs:
        exp = experiment_from_data(okc_experiment(args, folder, logs, device), name="bench")
    pipeline = build_pipeline(exp.data.TRAIN[0], phase=Phase.TRAIN,
                              seed=0, device=device)  # fmt: skip

    def steps() -> Iterator[None]:
        while True:
            for batch in pipeline:
                pipeline.to_device(batch)
                yield

    return timed(steps(), args, device)


def okc_experiment(args: argparse.Namespace, folder: Path, logs: str,
                   device: torch.device) -> dict[str, Any]:  # fmt: skip
    """The okc side as a user writes it: an experiment file's contents."""
    exp = _cifar_experiment(args, folder, logs, device)
    if args.recipe == "imagenet":
        from bench_data import IMAGENET_AUGMENT, IMAGENET_TRANSFORM

        def entries(ops: Any) -> list[dict[str, Any]]:
            return [{"name": op.name, "params": dict(op.params)} for op in ops]

        dataset = exp["data"]["TRAIN"][0]["dataset"]
        dataset.update(name="ImageFolder", params={"data_folder": str(folder)},
                       augment=entries(IMAGENET_AUGMENT),
                       transform=entries(IMAGENET_TRANSFORM))  # fmt: skip
    return exp


def _cifar_experiment(args: argparse.Namespace, folder: Path, logs: str,
                      device: torch.device) -> dict[str, Any]:  # fmt: skip
    return {
        "task": {"name": "ClassificationTask", "params": {
            "backbone_name": args.model, "pooling_name": "Pooling",
            "head_name": "ClassificationHead", "head_params": {"num_classes": NUM_CLASSES}}},
        "joint_loss": {"losses": [{"name": "CrossEntropyLoss", "params": {"label_smoothing": 0.1},
                                   "mapping": {"input": "prediction", "target": "target"}}]},
        "optimization": [{"optimizer": {"name": "SGD", "params": {
            "lr": args.lr, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4}}}],
        "data": {"TRAIN": [{
            "dataset": {
                "name": "CIFAR10", "params": {"data_folder": str(folder), "train": True},
                "transform": [{"name": "Normalize", "params": {"mean": list(MEAN),
                                                               "std": list(STD)}}],
                "augment": [
                    {"name": "RandomCrop", "params": {"size": [32, 32], "padding": 4,
                                                      "padding_mode": "reflect"}},
                    {"name": "HorizontalFlip"},
                ],
            },
            "dataloader": {"batch_size": args.batch_size, "shuffle": True, "drop_last": True,
                           "num_workers": args.okc_workers},
        }]},
        "trainer": {"accelerator": device.type, "max_steps": args.warmup + args.steps,
                    "max_epochs": -1, "compile": args.okc_compile,
                    "channels_last": args.channels_last, "enable_checkpointing": False,
                    "enable_progress_bar": False, "num_sanity_val_steps": 0,
                    "log_every_n_steps": 50},
        "logger": {"log_dir": logs, "experiment_name": "bench"},
        "seed_params": {"seed": 0},
    }  # fmt: skip


def side_lightning(
    args: argparse.Namespace, folder: Path, device: torch.device
) -> dict[str, float]:
    import albumentations as A
    import lightning as L
    from albumentations.pytorch import ToTensorV2

    if args.recipe == "imagenet":
        from bench_data import _Cv2Folder, albumentations_recipe

        dataset: Any = _Cv2Folder(folder, albumentations_recipe(True))
    else:
        images, labels = load_arrays(folder)
        transform = A.Compose([
            A.PadIfNeeded(40, 40, border_mode=4), A.RandomCrop(32, 32), A.HorizontalFlip(),
            A.Normalize(mean=MEAN, std=STD), ToTensorV2(),
        ])  # fmt: skip

        class Data(torch.utils.data.Dataset):
            def __len__(self) -> int:
                return len(images)

            def __getitem__(self, i: int) -> tuple[Tensor, int]:
                return transform(image=images[i])["image"], int(labels[i])

        dataset = Data()

    class Module(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.model, self.loss = make_model(args, device), _loss()

        def training_step(self, batch: Any, batch_idx: int) -> Tensor:
            x, y = batch
            return self.loss(self.model(x), y)

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return make_optimizer(self.model, args)

    clock, result = Clock(args, device), {}

    class Timer(L.Callback):
        def on_train_batch_end(self, trainer: Any, *_: Any) -> None:
            if trainer.global_step == args.warmup:
                clock.start()
            elif trainer.global_step == args.warmup + args.steps:
                result.update(clock.stop())  # CPU time: the main process only (not workers)

    loader = torch.utils.data.DataLoader(
        dataset, batch_size=args.batch_size, shuffle=True, drop_last=True,
        num_workers=args.lightning_workers, pin_memory=device.type == "cuda",
        persistent_workers=args.lightning_workers > 0,
    )  # fmt: skip
    trainer = L.Trainer(
        accelerator=device.type, devices=1, max_steps=args.warmup + args.steps, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        callbacks=[Timer()],
    )  # fmt: skip
    trainer.fit(Module(), loader)
    return result


def _with(args: argparse.Namespace, **changes: Any) -> argparse.Namespace:
    return argparse.Namespace(**{**vars(args), **changes})


def _loss() -> nn.Module:
    return nn.CrossEntropyLoss(label_smoothing=0.1)


RUNS: dict[str, Callable[[argparse.Namespace, Path, torch.device], dict[str, float]]] = {
    "limit": side_limit,
    "eager": lambda a, f, d: side_hand(a, f, d, compiled=False),
    "compiled": lambda a, f, d: side_hand(a, f, d, compiled=True),
    "okc": side_okc,
    "okc_auto": lambda a, f, d: side_okc(_with(a, okc_workers="auto"), f, d),
    "lightning": side_lightning,
    "data": side_data,
}


def run_side(args: argparse.Namespace) -> None:
    """In the subprocess: one side, one measurement, printed as JSON on the last line."""
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    result = RUNS[args.side](args, Path(args.data), device)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**20
    print(json.dumps({"side": args.side, **result, "peak_mib": peak}), flush=True)
    if args.side == "data":  # its loader threads are mid-epoch: leave without joining them
        os._exit(0)


# --- the driver -----------------------------------------------------------------------------------


def available(side: str) -> bool:
    if side != "lightning":
        return True
    import importlib.util

    return all(importlib.util.find_spec(m) for m in ("lightning", "albumentations"))


def measure(args: argparse.Namespace, side: str, data: Path) -> dict[str, float]:
    cmd = [sys.executable, __file__, "--side", side, "--data", str(data), *args.passthrough]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=args.timeout)
    if done.returncode != 0:
        raise SystemExit(f"side {side} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def report(args: argparse.Namespace, results: dict[str, list[dict[str, float]]]) -> str:
    median = {s: statistics.median(r["images_per_s"] for r in rs) for s, rs in results.items()}
    peak = {s: max(r["peak_mib"] for r in rs) for s, rs in results.items()}
    unit = "MiB (CUDA)" if args.device == "cuda" else "MiB (RSS)"
    lines = [
        f"{args.model}, batch {args.batch_size}, {args.device}, torch threads "
        f"{args.threads or torch.get_num_threads()}, {args.rounds} rounds x {args.steps} steps "
        f"after {args.warmup} warm-up, load average {os.getloadavg()[0]:.2f}",
        f"| side | images/s (median) | rounds | CPU ms/image | peak {unit} | / limit | "
        "/ lightning |",
        "|---|---|---|---|---|---|---|",
    ]
    training = {s: r for s, r in median.items() if s != "data"}
    for side, rate in median.items():
        rounds = ", ".join(f"{r['images_per_s']:.0f}" for r in results[side])
        trains = side != "data"  # the pipeline alone: its ratio is printed below the table
        vs_l = f"{rate / median['lightning']:.2f}" if "lightning" in median and trains else "-"
        vs_limit = f"{rate / median['limit']:.2f}" if "limit" in median and trains else "-"
        cpu = statistics.median(r["cpu_ms_per_image"] for r in results[side])
        lines.append(f"| {side} | {rate:.0f} | {rounds} | {cpu:.2f} | {peak[side]:.0f} | "
                     f"{vs_limit} | {vs_l} |")  # fmt: skip
    if "data" in median and training:
        fastest = max(training, key=training.get)
        ratio = median["data"] / training[fastest]
        lines.append(f"\ndata pipeline alone: {ratio:.2f}x the fastest training side "
                     f"({fastest}, {training[fastest]:.0f} images/s)")  # fmt: skip
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per round")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sides", default=",".join(SIDES))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--okc-workers", default="auto", help="num_workers (auto: okc default)")
    parser.add_argument("--okc-compile", default="auto")
    parser.add_argument(
        "--channels-last",
        default="auto",
        type=_setting,
        help="okc's trainer.channels_last, for every side but lightning",
    )
    parser.add_argument("--lightning-workers", type=int, default=2)
    parser.add_argument("--cifar", type=Path, help="folder with cifar-10-python.tar.gz")
    parser.add_argument("--num-images", type=int, default=10000, help="generated data size")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per side and round")
    parser.add_argument("--tiny", action="store_true", help="a seconds-long smoke run")
    parser.add_argument("--recipe", choices=["cifar", "imagenet"], default="cifar")
    parser.add_argument("--side", choices=SIDES + EXTRA_SIDES, help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.tiny:
        args.model, args.batch_size, args.steps, args.warmup, args.rounds = (
            "test_resnet", 8, 2, 1, 1)  # fmt: skip
        args.num_images = 64
    args.okc_workers = args.okc_workers if args.okc_workers == "auto" else int(args.okc_workers)
    return args


def _setting(value: str) -> bool | str:
    return value if value == "auto" else value.lower() in ("1", "true", "yes")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.side:
        run_side(args)
        return
    args.passthrough = [a for a in argv if a not in ("--tiny",)]
    if args.tiny:
        args.passthrough += ["--model", args.model, "--batch-size", str(args.batch_size),
                             "--steps", str(args.steps), "--warmup", str(args.warmup)]  # fmt: skip
    sides = [s for s in args.sides.split(",") if available(s)]
    with tempfile.TemporaryDirectory() as tmp:
        if args.recipe == "imagenet":
            from bench_data import write_imagenet_like

            num = min(args.num_images, 512)  # the sides cycle through it; generating costs
            data = Path(tempfile.gettempdir()) / f"okc-bench-imagenet-{num}"
            write_imagenet_like(data, num)
        else:
            data = args.cifar or write_generated(Path(tmp), args.num_images)
        results: dict[str, list[dict[str, float]]] = {s: [] for s in sides}
        for _ in range(args.rounds):
            for side in sides:
                results[side].append(measure(args, side, data))
    print(report(args, results))


if __name__ == "__main__":
    main()
