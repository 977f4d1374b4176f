"""Precision objects: what each ``trainer.precision`` actually does to the computation."""

from __future__ import annotations

import pytest
import torch

from okc.engine.precision import Precision

CPU = torch.device("cpu")


@pytest.mark.parametrize(
    ("setting", "autocast", "param_dtype", "scaler"),
    [
        (32, None, torch.float32, False),
        ("32-true", None, torch.float32, False),
        ("bf16-mixed", torch.bfloat16, torch.float32, False),
        ("bf16", torch.bfloat16, torch.float32, False),
        ("16-mixed", torch.float16, torch.float32, True),
        (16, torch.float16, torch.float32, True),
        ("bf16-true", None, torch.bfloat16, False),
        ("64", None, torch.float64, False),
    ],
)
def test_settings_map_to_autocast_dtype_and_scaler(setting, autocast, param_dtype, scaler) -> None:
    precision = Precision(setting, CPU)
    layer = precision.convert_module(torch.nn.Linear(4, 3))
    assert layer.weight.dtype == param_dtype
    x = precision.convert_input(torch.rand(2, 4))
    with precision.forward_context():
        out = layer(x)
    assert out.dtype == (autocast or param_dtype)
    assert (precision.scaler is not None) is scaler


def test_fp16_scaler_skips_overflowing_steps_and_unscales_before_the_step() -> None:
    precision = Precision("16-mixed", CPU)
    layer = torch.nn.Linear(4, 1)
    opt = torch.optim.SGD(layer.parameters(), lr=0.1)
    before = layer.weight.detach().clone()

    def step() -> None:
        with precision.forward_context():
            loss = layer(torch.ones(1, 4)).float().sum()  # d(loss)/dw = 1
        precision.backward(loss)
        precision.unscale(opt)
        precision.optimizer_step(opt)
        precision.update()

    first_scale = precision.scaler.get_scale()
    step()  # 65536 x 1 overflows float16: the step is skipped and the scale halved
    assert torch.equal(layer.weight.detach(), before)
    assert precision.scaler.get_scale() == first_scale / 2
    opt.zero_grad()
    step()  # now finite: gradients are unscaled to their true value, then applied
    assert torch.allclose(layer.weight.grad, torch.ones(1, 4))
    assert torch.allclose(layer.weight.detach(), before - 0.1)
    assert precision.state_dict()["scaler"]["scale"] == first_scale / 2
