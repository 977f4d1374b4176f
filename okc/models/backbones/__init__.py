"""Backbones: every timm model by name, plus a few tiny timm models registered for tests and debug.

``timm_lookup`` and ``timm_names`` are the BACKBONES registry's fallback (see ``okc.registry``).
timm itself is imported on the first lookup, not when this package is imported.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

from okc.models.backbones.timm_backbone import TimmBackbone, param_problems
from okc.registry import BACKBONES

__all__ = ["TimmBackbone", "param_problems", "timm_backbone", "timm_lookup", "timm_names"]

# Real timm architectures with a few thousand parameters: a forward takes milliseconds on a CPU.
TINY = ("test_resnet", "test_efficientnet", "test_convnext", "test_vit")


def timm_backbone(model_name: str) -> Callable[..., TimmBackbone]:
    """The registry entry for timm's ``model_name``: its signature is what a config may set.

    Any other keyword goes to timm's model (``drop_path_rate``, ``img_size``, ...).
    """

    def factory(
        *,
        in_channels: int = 3,
        pretrained: bool | str = False,
        out_indices: Sequence[int] | None = None,
        **timm_kwargs: Any,
    ) -> TimmBackbone:
        return TimmBackbone(
            model_name=model_name,
            in_channels=in_channels,
            pretrained=pretrained,
            out_indices=out_indices,
            **timm_kwargs,
        )

    factory.__name__ = factory.__qualname__ = model_name
    factory.__doc__ = f"timm's {model_name} as a list of stage maps (see TimmBackbone)."
    factory.param_problems = param_problems  # type: ignore[attr-defined]  # read by check_model_params
    return factory


@functools.cache
def timm_lookup(name: str) -> Callable[..., TimmBackbone] | None:
    """The factory for a timm model name (``resnet18``, ``resnet18.a1_in1k``), else None."""
    import timm
    from timm.models import get_arch_pretrained_cfgs

    if not timm.is_model(name):
        return None
    arch, _, tag = name.partition(".")
    if tag and name not in get_arch_pretrained_cfgs(arch):
        return None
    return timm_backbone(name)


def timm_names() -> list[str]:
    """Every timm architecture name, for listings and did-you-mean."""
    import timm

    return timm.list_models()


for _name in TINY:
    BACKBONES.register(timm_backbone(_name), name=_name)
