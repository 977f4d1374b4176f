"""okc.config.params: a component's params are an attrs class the one converter structures.

A typed signature becomes such a class (annotations the converter cannot structure accept any
value); a declared ``Params`` class is used as it is, its cross-field rules run once, while
structuring; errors are relative and placed by ``okc.errors.at``/``under``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import attrs
import pytest
import torch
from torch import nn

from okc.config.bind import construct, entry_problems, make
from okc.config.params import bind, params_class, problems, structurable
from okc.errors import ConfigError, ConfigErrors, ParamError, at, under
from okc.registry import Registry


def blur(
    *,
    sigma: float,
    kernel: int = 3,
    mode: Literal["reflect", "constant"] = "reflect",
    sizes: Sequence[int] = (1,),
    weights: Mapping[str, float] | None = None,
    module: nn.Module | None = None,
    fn: Callable[[int], int] | None = None,
) -> dict[str, Any]:
    return dict(sigma=sigma, kernel=kernel, mode=mode, sizes=sizes, weights=weights, fn=fn)


class Scale(nn.Module):
    """A component that declares its params: one class, a cross-field rule beside the fields."""

    @attrs.frozen(kw_only=True)
    class Params:
        low: float = 0.0
        high: float = 1.0
        channels: int

        def __attrs_post_init__(self) -> None:
            if self.low >= self.high:
                raise ParamError("high", f"must be above low ({self.low}), got {self.high}")

    def __init__(self, params: Params, *, in_channels: int) -> None:
        super().__init__()
        self.params, self.in_channels = params, in_channels


def test_signature_becomes_a_typed_class() -> None:
    cls = params_class(blur)
    types = {a.name: a.type for a in attrs.fields(cls)}
    assert types["sigma"] is float and types["kernel"] is int
    assert types["sizes"] == list[int] and types["weights"] == dict[str, float] | None
    assert types["module"] is Any and types["fn"] is Any  # cannot tell: any value passes
    assert structurable(torch.dtype) is Any and structurable(tuple[int, str]) == tuple[int, str]
    # values are structured strictly (an int is a float, "1e-3" is YAML 1.1's float)
    assert bind(blur, {"sigma": "1e-3", "sizes": [2, 3]}) == {"sigma": 1e-3, "sizes": [2, 3]}
    assert bind(blur, {"sigma": 1}) == {"sigma": 1.0}


def test_errors_name_key_expected_found_and_nearest_key_in_config_order() -> None:
    errors = problems(blur, {"sigmaa": 1.0, "kernel": "three", "mode": "wrap", "sizes": [1, "x"]})
    assert [str(e) for e in errors] == [
        "sigmaa: blur has no parameter 'sigmaa', did you mean 'sigma'?",
        "kernel: expected int, got 'three'",
        "mode: expected 'reflect' | 'constant', got 'wrap'",
        "sizes.1: expected int, got 'x'",
        "blur needs 'sigma', which is not set",
    ]


def test_injected_keys_are_okcs_and_open_signatures_pass_extras() -> None:
    def head(*, in_channels: int, num_classes: int, **extra: Any) -> None: ...

    assert [
        str(e) for e in problems(head, {"in_channels": 3, "num_classes": 2}, {"in_channels"})
    ] == ["in_channels: okc sets 'in_channels' of head itself; remove it"]
    assert bind(head, {"num_classes": 2, "dropout": 0.1}, {"in_channels"}) == {
        "num_classes": 2, "dropout": 0.1,
    }  # fmt: skip


def test_declared_params_run_their_rules_once_and_build_with_the_instance() -> None:
    registry = Registry("scales")
    registry.register(Scale)
    scale = make(registry, "Scale", {"channels": 4, "high": 2}, in_channels=3)
    assert scale.params == Scale.Params(channels=4, high=2.0) and scale.in_channels == 3
    errors = entry_problems(
        registry, "Scale", {"channels": 4, "low": 3, "hihg": 1}, ["in_channels"]
    )
    assert [str(e) for e in errors] == [
        "params.hihg: Scale has no parameter 'hihg', did you mean 'high'?"
    ]
    with pytest.raises(ConfigErrors) as err:
        construct(Scale, {"channels": 4, "low": 3}, in_channels=3)
    assert str(err.value) == "high: must be above low (3.0), got 1.0"
    assert [str(e) for e in entry_problems(registry, "Scael", {})] == [
        "name: unknown scale 'Scael', did you mean 'Scale'?"
    ]


def test_errors_are_placed_by_the_caller() -> None:
    with pytest.raises(ConfigErrors) as err, at("callbacks.2"), at("params"):
        construct(blur, {"kernel": 1.5})
    assert [str(e) for e in err.value.errors] == [
        "callbacks.2.params.kernel: expected int, got 1.5",
        "callbacks.2.params: blur needs 'sigma', which is not set",
    ]
    with pytest.raises(ConfigError, match=r"^task\.params\.lr: too big$"), at("task.params"):
        raise ParamError("lr", "too big")
    assert [str(e) for e in under("data", [ConfigError("", "empty")])] == ["data: empty"]


def test_a_subclass_with_its_own_signature_is_bound_by_it_not_by_the_inherited_params() -> None:
    from okc.data.datasets.base import ImageDataset

    class Dots(ImageDataset):
        def __init__(self, *, num_samples: int = 4, **common: Any) -> None:
            super().__init__(**common)
            self.num_samples = num_samples

    assert [str(e) for e in problems(Dots, {"num_samples": "x"})] == [
        "num_samples: expected int, got 'x'"
    ]
    dots = construct(Dots, {"num_samples": 3, "image_format": "gray"})
    assert dots.num_samples == 3 and dots.image_format == "gray"
    with pytest.raises(ConfigErrors, match="image_format: expected 'rgb'"):
        construct(Dots, {"image_format": "grey"})
