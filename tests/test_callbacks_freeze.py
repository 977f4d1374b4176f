"""FreezeUnfreeze on a real timm model: frozen weights are bit-identical after optimizer steps
(AdamW's weight decay included), unfrozen ones change, BatchNorm statistics follow the flags,
stages follow timm's feature_info, and all of it holds with the step compiled."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pytest
import torch
from torch import nn

import okc
from okc.callbacks.defaults import build_callbacks
from okc.engine.hooks import Callback, RunView
from okc.engine.loop import Loop
from okc.errors import ConfigError, ConfigErrors
from okc.models.backbones.timm_backbone import TimmBackbone

SHORT = (
    "trainer.max_epochs=2", "trainer.limit_train_batches=3", "~data.VALID",
    "~data.TRAIN.0.dataset.augment",
)  # fmt: skip


class Snapshots(Callback):
    """The model's state (parameters and buffers) at fit start and after each training epoch,
    and the training mode of every module during each epoch."""

    def __init__(self) -> None:
        self.states: list[dict[str, torch.Tensor]] = []
        self.training: list[dict[str, bool]] = []

    def _take(self, run: RunView) -> None:
        self.states.append({k: v.detach().clone() for k, v in run.model.state_dict().items()})

    def on_fit_start(self, run: RunView) -> None:
        self._take(run)

    def on_train_batch_end(self, run: RunView, logs: Mapping[str, float] | None) -> None:
        if run.batch_idx == 1:
            self.training.append({n: m.training for n, m in run.model.named_modules()})

    def on_train_epoch_end(self, run: RunView) -> None:
        self._take(run)


def freeze_override(freeze: list[dict[str, Any]], **params: Any) -> str:
    spec = {"name": "FreezeUnfreeze", "params": {"freeze_modules": freeze, **params}}
    return f"+callbacks=[{json.dumps(spec)}]"  # JSON is YAML


def fit(tiny_exp, freeze: list[dict[str, Any]], *overrides: str, **params: Any) -> Snapshots:
    exp = tiny_exp(*SHORT, *overrides, freeze_override(freeze, **params))
    spy = Snapshots()
    Loop(exp, callbacks=[*build_callbacks(exp, "fit"), spy]).fit()
    return spy


def changed(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], prefix: str) -> dict[str, bool]:
    return {
        k: not torch.equal(a[k], b[k])
        for k in a
        if k.startswith(prefix) and a[k].is_floating_point()
    }


def params_of(spy: Snapshots, model_prefix: str, *, kind: str) -> list[str]:
    keys = [k for k in spy.states[0] if k.startswith(model_prefix)]
    if kind == "bn_stats":
        return [k for k in keys if k.endswith(("running_mean", "running_var"))]
    if kind == "bn_weights":
        return [k for k in keys if ".bn" in k and k.endswith(("weight", "bias"))]
    return [k for k in keys if k.endswith(("weight", "bias")) and ".bn" not in k]


def test_backbone_frozen_until_an_epoch(tiny_exp) -> None:
    spy = fit(tiny_exp, [{"module_name": "backbone", "epoch": 1}])
    start, epoch0, epoch1 = spy.states
    backbone = [k for k in start if k.startswith("backbone.")]
    # epoch 0: every backbone tensor (weights, BN statistics) bit-identical after 3 AdamW steps
    assert not any(changed(start, epoch0, "backbone.").values())
    # ... while the head trained
    assert all(changed(start, epoch0, "head.").values())
    # epoch 1: unfrozen; conv weights and BN statistics move again
    moved = changed(epoch0, epoch1, "backbone.")
    assert all(moved[k] for k in params_of(spy, "backbone.", kind="weights"))
    assert all(moved[k] for k in params_of(spy, "backbone.", kind="bn_stats"))
    assert len(backbone) > 20


def test_weight_decay_does_not_drift_frozen_weights(tiny_exp) -> None:
    """AdamW decays every parameter it steps: a frozen one must not be stepped at all."""
    spy = fit(
        tiny_exp, [{"module_name": "head"}], "optimization.0.optimizer.params.weight_decay=0.5"
    )
    start, epoch0, epoch1 = spy.states
    assert not any(changed(start, epoch1, "head.").values())
    assert all(changed(start, epoch0, "backbone.body.conv1").values())


def test_stages_freeze_the_stem_and_first_stages(tiny_exp) -> None:
    spy = fit(tiny_exp, [{"module_name": "backbone", "stages": 1}])
    start, _, end = spy.states
    moved = changed(start, end, "backbone.body.")
    frozen = [k for k in moved if k.startswith(("backbone.body.conv1", "backbone.body.bn1",
                                                "backbone.body.layer1"))]  # fmt: skip
    assert frozen and not any(moved[k] for k in frozen)
    later = [k for k in moved if k.startswith(("backbone.body.layer2", "backbone.body.layer4"))]
    assert later and all(moved[k] for k in later if not k.endswith("num_batches_tracked"))


@pytest.mark.parametrize(("requires_grad", "track"), [(False, False), (True, True), (False, True)])
def test_batchnorm_flags(tiny_exp, requires_grad: bool, track: bool) -> None:
    spy = fit(tiny_exp, [{"module_name": "backbone", "module_class": "_BatchNorm",
                          "bn_requires_grad": requires_grad, "bn_track_running_stats": track}])  # fmt: skip
    start, _, end = spy.states
    moved = changed(start, end, "backbone.")
    bn_weights = [k for k in moved if "bn" in k.split(".")[-2] and k.endswith(("weight", "bias"))]
    bn_stats = [k for k in moved if k.endswith(("running_mean", "running_var"))]
    convs = [k for k in moved if "conv" in k.split(".")[-2]]
    assert bn_weights and bn_stats and convs
    assert all(moved[k] == requires_grad for k in bn_weights)
    assert all(moved[k] == track for k in bn_stats)
    assert all(moved[k] for k in convs)  # only BatchNorm layers were selected


@pytest.mark.parametrize("top_down", [True, False])
def test_overlapping_entries_follow_the_order(tiny_exp, top_down: bool) -> None:
    """``backbone`` freezes every BatchNorm's statistics; ``backbone.body.layer4`` lets its own
    track them. Top-down, the deeper rule comes last and wins; bottom-up, the outer one does."""
    spy = fit(tiny_exp, [
        {"module_name": "backbone"},
        {"module_name": "backbone.body.layer4", "module_class": "BatchNorm2d",
         "bn_track_running_stats": True},
    ], top_down_freeze_order=top_down)  # fmt: skip
    start, _, end = spy.states
    moved = changed(start, end, "backbone.")
    layer4 = [k for k in moved if k.startswith("backbone.body.layer4") and "running_mean" in k]
    layer1 = [k for k in moved if k.startswith("backbone.body.layer1") and "running_mean" in k]
    assert layer4 and layer1
    assert all(moved[k] == top_down for k in layer4)
    assert not any(moved[k] for k in layer1)
    assert not any(moved[k] for k in moved if k.endswith("weight"))  # weights stay frozen


def test_frozen_dropout_is_off(tiny_exp) -> None:
    spy = fit(tiny_exp, [{"module_name": "", "module_class": "Dropout", "epoch": 1}],
              "+task.params.head_params.drop_rate=0.5")  # fmt: skip
    during0, during1 = spy.training
    assert during0["head.dropout"] is False and during1["head.dropout"] is True
    assert during0["head"] is True  # only the dropout


def test_stage_misspelling_is_read_as_stages(tiny_exp) -> None:
    with pytest.warns(UserWarning, match=r"an entry's 'stage' is read as 'stages'"):
        spy = fit(tiny_exp, [{"module_name": "backbone", "stage": 1}])
    moved = changed(spy.states[0], spy.states[-1], "backbone.body.")
    assert not any(v for k, v in moved.items() if k.startswith("backbone.body.layer1"))
    assert any(v for k, v in moved.items() if k.startswith("backbone.body.layer3"))


def test_errors_name_the_entry(tiny_exp) -> None:
    def check(freeze: list[dict[str, Any]]) -> list[str]:
        return [str(e) for e in okc.check(tiny_exp(freeze_override(freeze)))]

    assert check([{"module_nme": "backbone"}]) == [
        "callbacks.0.params.freeze_modules.0.module_nme: a freeze_modules entry has no parameter "
        "'module_nme', did you mean 'module_name'?",
        "callbacks.0.params.freeze_modules.0: a freeze_modules entry needs 'module_name', which "
        "is not set",
    ]
    assert check([{"module_name": "backbone", "epoch": "two"}]) == [
        "callbacks.0.params.freeze_modules.0.epoch: expected int, got 'two'"
    ]
    built = [
        ({"module_name": "bakbone"}, "module_name: no module 'bakbone' in the model, did you mean 'backbone'?"),
        ({"module_name": "head", "stages": 1}, "stages: 'head' (ClassificationHead) has no stages"),
        ({"module_name": "backbone", "stages": 9}, "stages: test_resnet has stages 0 (the stem) to 4, got 9"),
        ({"module_name": "backbone", "module_class": "BachNorm2d"}, "module_class: no module of class 'BachNorm2d' in 'backbone', did you mean 'BatchNorm2d'?"),
    ]  # fmt: skip
    for entry, message in built:
        with pytest.raises((ConfigError, ConfigErrors)) as err:
            fit(tiny_exp, [entry])
        assert str(err.value).startswith(f"callbacks.0.params.freeze_modules.0.{message}"), (
            err.value
        )


def test_timm_stages_follow_feature_info() -> None:
    resnet = TimmBackbone(model_name="test_resnet")
    body = resnet.body
    assert resnet.get_stages(0) == [body.conv1, body.bn1, body.act1]
    assert resnet.get_stages(1)[3:] == [body.maxpool, body.layer1]
    assert resnet.get_stages(4)[-1] is body.layer4
    vit = TimmBackbone(model_name="test_vit")
    stem = vit.get_stages(0)
    loose = dict(stem[0].named_parameters())  # cls_token and pos_embed: the same Parameters
    assert loose["cls_token"] is vit.body.model.cls_token
    assert stem[-1] is vit.body.model.blocks[0]  # the block that makes the first feature map
    assert vit.num_stages == 5  # one per block, though only the last 3 maps are returned
    detection_style = TimmBackbone(model_name="test_resnet", out_indices=(1, 2, 3))
    assert detection_style.get_stages(1)[-1] is detection_style.body.layer1  # not shifted
    efficientnet = TimmBackbone(model_name="test_efficientnet")
    assert efficientnet.get_stages(1)[-1] is efficientnet.body.blocks[1]
    assert not isinstance(resnet.get_stages(0)[0], nn.Identity)


@pytest.mark.compile
def test_freeze_and_unfreeze_with_the_step_compiled(tiny_exp) -> None:
    """The compiled step sees requires_grad change through its guards and recompiles: frozen
    weights stay bit-identical, unfrozen ones train."""
    from torch._dynamo.eval_frame import OptimizedModule
    from torch._dynamo.utils import counters

    exp = tiny_exp(*SHORT, "trainer.compile=true", freeze_override([{"module_name": "backbone",
                                                                     "epoch": 1}]))  # fmt: skip
    spy = Snapshots()
    loop = Loop(exp, callbacks=[*build_callbacks(exp, "fit"), spy])
    graphs = counters["stats"]["unique_graphs"]
    loop.fit()
    assert isinstance(loop.train_module, OptimizedModule)
    assert counters["stats"]["unique_graphs"] - graphs >= 2  # frozen, then unfrozen
    start, epoch0, epoch1 = spy.states
    assert not any(changed(start, epoch0, "backbone.").values())
    assert all(changed(start, epoch0, "head.").values())
    moved = changed(epoch0, epoch1, "backbone.")
    assert all(moved[k] for k in params_of(spy, "backbone.", kind="weights"))
    assert all(moved[k] for k in params_of(spy, "backbone.", kind="bn_stats"))
