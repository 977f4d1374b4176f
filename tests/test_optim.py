"""Optimizers over chosen parameters, mmcv-style param groups, schedulers and how they step."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch import nn

from okc.config import schema
from okc.errors import OkcError, under
from okc.optim import build_optimization, check_optimization, scheduler_step, step_schedulers


class Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(
            nn.Conv2d(3, 4, 3),  # backbone.0
            nn.BatchNorm2d(4),  # backbone.1
            nn.Conv2d(4, 4, 3, groups=4),  # backbone.2: depthwise
        )
        self.layer1 = nn.Linear(4, 4)
        self.layer10 = nn.Linear(4, 4)
        self.head = nn.Linear(4, 2)


def opt(name="SGD", modules=(), scheduler=None, paramwise_cfg=None, **params):
    params.setdefault("lr", 0.1)
    return schema.Optimization(
        optimizer=schema.Optimizer(name=name, params=params, paramwise_cfg=paramwise_cfg or {}),
        scheduler=scheduler,
        modules=tuple(modules),
    )


def sched(name, interval="epoch", frequency=1, monitor="valid/loss", strict=True, **params):
    pl = schema.SchedulerPL(interval=interval, frequency=frequency, monitor=monitor, strict=strict)
    return schema.Scheduler(name=name, params=params, pl_params=pl)


def ids(params) -> set[int]:
    return {id(p) for p in params}


def opt_params(optimizer: torch.optim.Optimizer) -> set[int]:
    return ids(p for g in optimizer.param_groups for p in g["params"])


def lr(pair) -> float:
    return pair.optimizer.param_groups[0]["lr"]


# --- which parameters -----------------------------------------------------------------------------


def test_modules_split_parameters_and_the_catch_all_takes_the_rest():
    model = Toy()
    model.head.bias.requires_grad_(False)
    adam, sgd = build_optimization([opt("Adam", modules=["backbone", "layer1"]), opt()], model)
    assert opt_params(adam.optimizer) == ids(
        [*model.backbone.parameters(), *model.layer1.parameters()]
    )
    assert opt_params(sgd.optimizer) == ids([*model.layer10.parameters(), model.head.weight])
    assert sgd.param_names == ("layer10.weight", "layer10.bias", "head.weight")
    assert isinstance(adam.optimizer, torch.optim.Adam) and adam.scheduler is None


def test_compiled_models_are_named_as_written():
    model = torch.compile(Toy(), backend="eager")
    pair, _ = build_optimization([opt(modules=["head"]), opt()], model)
    assert pair.param_names == ("head.weight", "head.bias")


@pytest.mark.parametrize(
    ("specs", "where", "what"),
    [
        (
            [opt(modules=["backbone"]), opt(modules=["backbone.0"])],
            "optimization.1.modules.0",
            "one optimizer only",
        ),
        ([opt(), opt()], "optimization.1.modules", "already takes every parameter"),
        ([opt(modules=["backbon"])], "optimization.0.modules.0", "did you mean 'backbone'"),
        (
            [opt(modules=["head"]), opt(modules=["head.bias"])],
            "optimization.1.modules.0",
            "overlaps",
        ),
    ],
)
def test_selection_errors_name_the_key(specs, where, what):
    with pytest.raises(OkcError) as err:
        build_optimization(specs, Toy())
    assert where in str(err.value) and what in str(err.value)


def test_frozen_or_exhausted_selections_are_errors_and_leftovers_warn():
    model = Toy()
    model.head.requires_grad_(False)
    with pytest.raises(
        OkcError, match=r"optimization\.0\.modules\.0: 'head': all its parameters are frozen"
    ):
        build_optimization([opt(modules=["head"])], model)
    with pytest.raises(OkcError, match=r"optimization\.1: no trainable parameter is left"):
        build_optimization([opt(modules=["backbone", "layer1", "layer10"]), opt()], model)
    with pytest.warns(
        UserWarning, match="2 trainable parameters .* not be trained: layer10.weight"
    ):
        build_optimization(
            [opt(modules=["backbone", "layer1"])], model
        )  # dot boundary: not layer10


# --- param groups ---------------------------------------------------------------------------------


def groups_of(optimizer: torch.optim.Optimizer, model: nn.Module) -> dict[str, tuple[float, float]]:
    names = {id(p): n for n, p in model.named_parameters()}
    return {
        names[id(p)]: (g["lr"], g["weight_decay"])
        for g in optimizer.param_groups
        for p in g["params"]
    }


def test_paramwise_cfg_follows_mmcv_rules():
    model = Toy()
    cfg = {
        "custom_keys": {"head": {"lr_mult": 0.1}, "head.weight": {"lr_mult": 10, "decay_mult": 0}},
        "bias_lr_mult": 2.0,
        "bias_decay_mult": 0.5,
        "norm_decay_mult": 0.0,
        "dwconv_decay_mult": 0.25,
    }
    (pair,) = build_optimization([opt(paramwise_cfg=cfg, lr=1.0, weight_decay=0.1)], model)
    got = groups_of(pair.optimizer, model)
    assert {k: (round(a, 6), round(b, 6)) for k, (a, b) in got.items()} == (
        {
            "backbone.0.weight": (1.0, 0.1),
            "backbone.0.bias": (2.0, 0.05),  # bias: lr and decay multipliers
            "backbone.1.weight": (1.0, 0.0),  # norm: decay only
            "backbone.1.bias": (1.0, 0.0),  # norm bias: no bias_lr_mult, norm decay wins
            "backbone.2.weight": (1.0, 0.025),  # depthwise
            "backbone.2.bias": (2.0, 0.025),
            "layer1.weight": (1.0, 0.1),
            "layer1.bias": (2.0, 0.05),
            "layer10.weight": (1.0, 0.1),
            "layer10.bias": (2.0, 0.05),
            "head.weight": (10.0, 0.0),  # the longest custom key wins
            "head.bias": (0.1, 0.1),  # a custom key disables the bias rules
        }
    )
    # parameters with the same settings share one group
    assert len(pair.optimizer.param_groups) == len(set(got.values()))


def test_paramwise_uses_the_optimizers_default_decay_and_warns_on_dead_keys():
    model = Toy()
    cfg = {"norm_decay_mult": 0.0, "custom_keys": {"nothing_like_this": {"lr_mult": 2}}}
    with pytest.warns(UserWarning, match="nothing_like_this matches no parameter"):
        (pair,) = build_optimization([opt("AdamW", paramwise_cfg=cfg)], model)
    got = groups_of(pair.optimizer, model)
    assert got["backbone.1.weight"] == (0.1, 0.0) and got["head.weight"] == (0.1, 0.01)


def test_check_optimization_finds_problems_without_a_model():
    specs = [
        opt("Adm"),
        opt("SGD", momentun=0.9, paramwise_cfg={"bias_lr_mul": 2, "custom_keys": {"x": {"lr": 1}}}),
        opt("SGD", modules=["a"], scheduler=sched("StepLR")),
        opt("SGD", modules=["b"], scheduler=sched("StepLR", step_size=1, frequency=0)),
    ]
    by_path = {e.path: e.message for e in under("optimization", check_optimization(specs))}
    assert "did you mean 'Adam'" in by_path["optimization.0.optimizer.name"]
    assert "did you mean 'momentum'" in by_path["optimization.1.optimizer.params.momentun"]
    assert (
        "did you mean 'bias_lr_mult'"
        in by_path["optimization.1.optimizer.paramwise_cfg.bias_lr_mul"]
    )
    assert (
        "use lr_mult or decay_mult"
        in by_path["optimization.1.optimizer.paramwise_cfg.custom_keys.x.lr"]
    )
    assert "needs 'step_size'" in by_path["optimization.2.scheduler.params"]
    assert "at least 1" in by_path["optimization.3.scheduler.pl_params.frequency"]


# --- schedulers -----------------------------------------------------------------------------------


NOT_STEPPED = "ignore:Detected call of `lr_scheduler.step"  # no optimizer step in these tests


@pytest.mark.filterwarnings(NOT_STEPPED)
def test_intervals_and_frequencies():
    model = Toy()
    every_2_epochs, each_step = build_optimization(
        [
            opt(
                modules=["backbone"], scheduler=sched("StepLR", frequency=2, step_size=1, gamma=0.5)
            ),
            opt(scheduler=sched("LinearLR", interval="step", start_factor=0.5, total_iters=2)),
        ],
        model,
    )
    assert (every_2_epochs.interval, every_2_epochs.frequency, each_step.interval) == (
        "epoch",
        2,
        "step",
    )
    pairs = [every_2_epochs, each_step]
    assert lr(each_step) == pytest.approx(0.05)
    step_schedulers(pairs, "step", index=1)
    assert (lr(every_2_epochs), lr(each_step)) == pytest.approx((0.1, 0.075))
    step_schedulers(pairs, "epoch", index=1)  # 1 % 2: not yet
    assert lr(every_2_epochs) == pytest.approx(0.1)
    step_schedulers(pairs, "epoch", index=2)
    assert (lr(every_2_epochs), lr(each_step)) == pytest.approx((0.05, 0.075))


def test_plateau_reads_the_monitored_value_or_says_what_is_logged():
    spec = opt(
        scheduler=sched("ReduceLROnPlateau", monitor="valid/Accuracy", mode="max", patience=0)
    )
    (pair,) = build_optimization([spec], Toy())
    assert pair.monitor == "valid/Accuracy"
    assert scheduler_step(pair, {"valid/Accuracy": torch.tensor(0.5)})
    assert scheduler_step(pair, {"valid/Accuracy": torch.tensor(0.4)})  # worse: reduce
    assert lr(pair) == pytest.approx(0.01)
    with pytest.raises(OkcError) as err:
        scheduler_step(pair, {"valid/loss": 1.0, "train/loss": 2.0})
    text = str(err.value)
    assert "optimization.0.scheduler.pl_params.monitor" in text
    assert "'valid/Accuracy'" in text and "train/loss, valid/loss" in text
    lenient = opt(scheduler=sched("ReduceLROnPlateau", monitor="valid/x", strict=False))
    (pair,) = build_optimization([lenient], Toy())
    with pytest.warns(UserWarning, match="not updated"):
        assert not scheduler_step(pair, {})


@pytest.mark.filterwarnings(NOT_STEPPED)
def test_cosine_annealing_warmup_by_hand():
    spec = opt(
        scheduler=sched(
            "CosineAnnealingWarmup", interval="step", T_max=6, warmup_iters=2, eta_min=0.01
        )
    )
    (pair,) = build_optimization([spec], Toy())
    seen = [lr(pair)]
    for i in range(1, 8):
        step_schedulers([pair], "step", index=i)
        seen.append(lr(pair))
    cosine = [0.01 + 0.09 * (1 + math.cos(math.pi * k / 4)) / 2 for k in range(5)]
    assert seen == pytest.approx([0.0, 0.05, *cosine, 0.01])


def test_timm_schedulers_are_stepped_the_timm_way():
    spec = opt(scheduler=sched("CosineLRScheduler", t_initial=4, lr_min=0.0))
    (pair,) = build_optimization([spec], Toy())
    for epoch in range(1, 5):
        step_schedulers([pair], "epoch", index=epoch)
        assert lr(pair) == pytest.approx(0.05 * (1 + math.cos(math.pi * epoch / 4)))
    per_step = opt(
        scheduler=sched("CosineLRScheduler", interval="step", t_initial=4, t_in_epochs=False)
    )
    (pair,) = build_optimization([per_step], Toy())
    step_schedulers([pair], "step", index=2)
    assert lr(pair) == pytest.approx(0.05)
    with pytest.raises(
        OkcError, match=r"optimization\.0\.scheduler\.pl_params\.interval: .*t_in_epochs"
    ):
        build_optimization(
            [opt(scheduler=sched("CosineLRScheduler", interval="step", t_initial=4))], Toy()
        )


def test_optimizer_step_with_groups_trains():
    model = Toy()
    (pair,) = build_optimization([opt(paramwise_cfg={"bias_lr_mult": 2.0}, momentum=0.9)], model)
    before = model.head.weight.detach().clone()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.head(torch.randn(2, 4)).sum().backward()
        pair.optimizer.step()
    assert not torch.equal(before, model.head.weight)
