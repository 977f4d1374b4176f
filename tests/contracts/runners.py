"""The default check of each registry kind (see README.md)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs
import torch
from torch import nn

from okc.config import bind
from okc.errors import at
from okc.registry import REGISTRIES


@attrs.frozen
class Case:
    """How to build one registered component and what to run it on."""

    params: Mapping[str, Any] = attrs.field(factory=dict)
    inputs: Callable[[], Any] | None = None
    check: Callable[..., None] | None = None


def make(kind: str, name: str, case: Case, **supplied: Any) -> Any:
    """Build ``name`` from its registry the way okc does (params bound to its signature)."""
    with at(name):
        return bind.make(REGISTRIES[kind], name, dict(case.params), **supplied)


def check_backbone(name: str, case: Case, **_: Any) -> None:
    backbone = make("backbones", name, case).eval()
    x = case.inputs() if case.inputs else torch.rand(2, 3, 32, 32)
    maps = backbone(x)
    assert [m.shape[1] for m in maps] == list(backbone.out_channels)
    assert [x.shape[-1] // m.shape[-1] for m in maps] == list(backbone.out_strides)


def tiny_backbone() -> nn.Module:
    return make("backbones", "test_resnet", Case()).eval()


def check_neck(name: str, case: Case, **_: Any) -> None:
    backbone = tiny_backbone()
    neck = make("necks", name, case, in_channels=list(backbone.out_channels),
                in_strides=list(backbone.out_strides)).eval()  # fmt: skip
    out = neck(backbone(case.inputs() if case.inputs else torch.rand(2, 3, 32, 32)))
    assert out.shape[1] == neck.out_channels and torch.isfinite(out).all()


def check_pooling(name: str, case: Case, **_: Any) -> None:
    pooling = make("poolings", name, case, in_channels=8).eval()
    out = pooling(case.inputs() if case.inputs else torch.rand(2, 8, 4, 4))
    assert out.shape == (2, pooling.out_channels) and torch.isfinite(out).all()


def check_head(name: str, case: Case, **_: Any) -> None:
    head = make("heads", name, case, in_channels=8).eval()
    if case.inputs:
        x = case.inputs()
    else:
        x = torch.rand(2, 8, 4, 4) if head.input_kind == "map" else torch.rand(2, 8)
    kwargs = {"image_size": (16, 16)} if getattr(head, "needs_image_size", False) else {}
    out = head(x, **kwargs)
    assert out.shape[:2] == (2, head.out_channels) and torch.isfinite(out).all()


def check_loss(name: str, case: Case, **_: Any) -> None:
    assert case.inputs is not None, f"the case of loss {name} needs inputs"
    loss = make("losses", name, case)
    inputs = case.inputs()
    value = loss(**inputs)
    assert value.dim() == 0 and torch.isfinite(value), value
    grads = [v for v in inputs.values() if isinstance(v, torch.Tensor) and v.requires_grad]
    if grads:
        value.backward()
        assert all(g.grad is not None and torch.isfinite(g.grad).all() for g in grads)


def check_metric(name: str, case: Case, **_: Any) -> None:
    assert case.inputs is not None, f"the case of metric {name} needs inputs"
    metric = make("metrics", name, case)
    metric.update(**case.inputs())
    value = metric.compute()
    values = value.values() if isinstance(value, Mapping) else [value]
    assert all(math.isfinite(float(v)) for v in values), value


def run_augmentation(name: str, case: Case) -> tuple[torch.Tensor, ...]:
    """``(image, mask, out, out_mask)``: the op built from config on a 2x3x16x16 batch, checked
    for the pipeline's contract (float out, label maps never blended)."""
    from okc.data.augment import build_ops
    from okc.data.ops import Chain

    torch.manual_seed(0)
    op = Chain(build_ops([{"name": name, "params": dict(case.params)}]))
    image = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8).float().div(255)
    mask = torch.randint(0, 3, (2, 1, 16, 16)).float()
    out, (out_mask,) = op(image, [mask])
    assert out.dtype == torch.float32 and out.dim() == 4 and out.shape[:2] == (2, 3)
    assert out_mask.shape[-2:] == out.shape[-2:] and torch.isfinite(out).all()
    assert set(out_mask.round().unique().tolist()) <= {0.0, 1.0, 2.0}  # labels, never blends
    return image, mask, out, out_mask


def check_augmentation(name: str, case: Case, **_: Any) -> None:
    """The contract, and that the op does something: an op that leaves every pixel as it was
    (an identity, or a case whose settings never apply it) fails. Declared no-ops have a case
    with a check of their own (cases_augment.py)."""
    image, _, out, _ = run_augmentation(name, case)
    assert out.shape != image.shape or not torch.equal(out, image), (
        f"{name} with {dict(case.params)} left the image unchanged: its case must apply it "
        "(p: 1) with settings that change pixels"
    )


def check_sampler(name: str, case: Case, **_: Any) -> None:
    sampler = make("samplers", name, case)
    order = sampler.order(10, torch.Generator().manual_seed(0))
    assert len(order) == sampler.num_indices(10) and ((order >= 0) & (order < 10)).all()


def check_callback(name: str, case: Case, *, tiny_exp: Any, **_: Any) -> None:
    import okc

    params = dict(case.params)
    exp = tiny_exp("trainer.max_steps=2", "trainer.max_epochs=1",
                   f"+callbacks=[{{name: {name}, params: {params!r}}}]")  # fmt: skip
    result = okc.fit(exp)
    assert result.global_step == 2


def check_logger(name: str, case: Case, *, tmp_path: Path, **_: Any) -> None:
    logger = make("loggers", name, case, run_dir=tmp_path)
    logger.log({"train/loss": 0.5}, step=1, epoch=0)
    logger.close()
    assert any(tmp_path.rglob("*")), "the logger wrote nothing"


def check_scheduler(name: str, case: Case, **_: Any) -> None:
    from okc.optim import OptimizerPair, scheduler_step

    optimizer = torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1)
    scheduler = make("schedulers", name, case, optimizer=optimizer)
    pair = OptimizerPair(optimizer, scheduler=scheduler, interval="epoch", monitor="valid/loss")
    for epoch in range(1, 6):
        optimizer.step()
        scheduler_step(pair, {"valid/loss": 1.0 / epoch}, index=epoch)
    assert all(math.isfinite(g["lr"]) and g["lr"] >= 0 for g in optimizer.param_groups)


RUNNERS: dict[str, Callable[..., None]] = {
    "backbones": check_backbone,
    "necks": check_neck,
    "poolings": check_pooling,
    "heads": check_head,
    "losses": check_loss,
    "metrics": check_metric,
    "augmentations": check_augmentation,
    "samplers": check_sampler,
    "callbacks": check_callback,
    "loggers": check_logger,
    "schedulers": check_scheduler,
}
