"""Any timm model as a backbone: a list of stage feature maps plus their channels and strides.

One adapter over timm's ``features_only`` wrappers instead of one okc class per family: timm 1.0.31
builds ``features_only`` for every one of its 1371 architectures (checked on the meta device),
ViTs included (through ``forward_intermediates``), so no per-model fallback is needed.
"""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from okc.errors import ParamError, did_you_mean
from okc.models.backbones.weights import (
    check_weights_fit,
    download_failed,
    offline_unless_hub_reachable,
    weights_path,
)

# timm arguments okc sets itself; a config setting them would break the stage contract.
_RESERVED = {
    "in_chans": "use in_channels",
    "features_only": "okc always builds timm backbones with features_only",
    "feature_cls": "okc needs timm's list-of-maps feature wrapper",
    "pretrained_cfg_overlay": "pass a local weights file as pretrained instead",
}
_UNEXPECTED_KWARG = re.compile(r"(\w+)\.__init__\(\) got an unexpected keyword argument '(\w+)'")


def param_problems(params: Mapping[str, Any]) -> list[ParamError]:
    """Value problems in backbone params that a signature cannot express; cheap, builds nothing.

    The registry's factories carry it (``okc.models.parts.ChecksParams``): their signature is
    open (any timm keyword), so no Params class can state these rules. ``okc check`` and
    building both find them when ``ModelKeys`` is structured; the backbone does not re-check.
    """
    problems = [
        ParamError(k, f"okc sets this itself ({why})")
        for k, why in _RESERVED.items()
        if k in params
    ]
    in_channels = params.get("in_channels", 3)
    if type(in_channels) is int and in_channels < 1:
        problems.append(ParamError("in_channels", f"must be at least 1, got {in_channels}"))
    pretrained = params.get("pretrained", False)
    if isinstance(pretrained, str):
        try:
            weights_path(pretrained)
        except ParamError as err:
            problems.append(err)
    out_indices = params.get("out_indices")
    if isinstance(out_indices, (list, tuple)) and not out_indices:
        problems.append(ParamError("out_indices", "must name at least one stage"))
    return problems


class TimmBackbone(nn.Module):
    """A timm model whose forward returns its stage maps, finest first, each (N, C, H, W).

    ``out_channels`` and ``out_strides`` (one per returned stage) size the neck, pooling and head.
    ``pretrained`` is false, true (timm's default weights from the hub) or a local weights file.
    """

    def __init__(
        self,
        *,
        model_name: str,
        in_channels: int = 3,
        pretrained: bool | str = False,
        out_indices: Sequence[int] | None = None,
        **timm_kwargs: Any,
    ) -> None:
        super().__init__()
        self.model_name = model_name
        self.in_channels = in_channels
        self.body = _create_features(
            model_name,
            in_channels=in_channels,
            pretrained=pretrained,
            out_indices=out_indices,
            timm_kwargs=timm_kwargs,
        )
        info = self.body.feature_info
        self.out_channels: list[int] = list(info.channels())
        self.out_strides: list[int] = list(info.reduction())
        # A few timm families (MambaOut, ...) compute channels-last and return NHWC maps.
        self.channels_last_output = getattr(self.body, "output_fmt", "NCHW") == "NHWC"

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = self.body(x)
        if self.channels_last_output:
            return [f.permute(0, 3, 1, 2) for f in features]
        return list(features)

    @property
    def num_stages(self) -> int:
        """Stages after the stem that ``get_stages`` names (every feature stage of the timm model
        that this backbone builds, whichever ``out_indices`` it returns)."""
        return len(_stage_units(self.body, self.model_name)[2]) - 1

    def get_stages(self, num_stages: int) -> list[nn.Module]:
        """The stem and the first ``num_stages`` stages (TorchOk's ``get_stages``; FreezeUnfreeze's
        ``stages`` freezes them).

        Stages follow timm's ``feature_info`` module names (all of the model's feature stages,
        not only the ``out_indices`` returned): the stem (stage 0) is every module up to and
        including the one that makes the first feature map, stage i the modules after it up to
        the one that makes map i. A ResNet:
        stem ``conv1, bn1, act1``; stage 1 ``maxpool, layer1``; stage 2 ``layer2``. Parameters held
        directly by a module that spans stages (a ViT's ``cls_token``, ``pos_embed``) are stem.
        """
        if not 0 <= num_stages <= self.num_stages:
            raise ParamError(
                "stages", f"{self.model_name} has stages 0 (the stem) to {self.num_stages}, "
                f"got {num_stages}",
            )  # fmt: skip
        units, loose, ends = _stage_units(self.body, self.model_name)
        stem: list[nn.Module] = [_LooseParameters(loose)] if loose else []
        return stem + units[: ends[num_stages] + 1]


class _LooseParameters(nn.Module):
    """Parameters of a module split across stages that none of its children holds, viewed as
    one module (the same Parameter objects: freezing them here freezes them in the model). Never
    attached to the model, so its state_dict is unchanged."""

    def __init__(self, params: Sequence[tuple[str, nn.Parameter]]) -> None:
        super().__init__()
        for name, param in params:
            self.register_parameter(name.replace(".", "_"), param)


def _feature_modules(body: nn.Module, model_name: str) -> tuple[nn.Module, list[nn.Module]]:
    """The module timm's ``feature_info`` names are relative to, and the module of each map."""
    info = body.feature_info
    names = [f["module"] for f in getattr(info, "info", ())] or info.module_name()
    roots = [body, *(m for m in (getattr(body, "model", None),) if isinstance(m, nn.Module))]
    for root in roots:
        found = [_submodule(root, name) for name in names]
        # stages after the last returned map are cut from the body: count up to the first gap
        found = found[: found.index(None)] if None in found else found
        if found and len(found) >= len(info.module_name()):
            return root, found  # type: ignore[return-value]
    raise ParamError(
        "stages",
        f"{model_name}'s feature maps do not come from named modules ({', '.join(names)}), so its "
        "stages cannot be told apart; freeze modules by name instead (module_name: "
        "backbone.body.<module>)",
    )


def _submodule(root: nn.Module, name: str) -> nn.Module | None:
    # timm's FeatureListNet flattens one level of nesting: ``stages.0`` becomes ``stages_0``
    for candidate in (name, name.replace(".", "_", 1)):
        try:
            return root.get_submodule(candidate)
        except AttributeError:
            continue
    return None


def _stage_units(
    body: nn.Module, model_name: str
) -> tuple[list[nn.Module], list[tuple[str, nn.Parameter]], list[int]]:
    """The body as a flat run of modules, split where each feature map is made: ``(units, loose
    parameters of the modules that were split, index of the unit ending each stage)``."""
    root, features = _feature_modules(body, model_name)
    marks = {id(m) for m in features}
    units: list[nn.Module] = []
    loose: list[tuple[str, nn.Parameter]] = []

    def expand(module: nn.Module, prefix: str) -> None:
        loose.extend((f"{prefix}{n}", p) for n, p in module.named_parameters(recurse=False))
        for name, child in module.named_children():
            inner = any(id(m) in marks for m in child.modules() if m is not child)
            if inner:
                expand(child, f"{prefix}{name}.")
            else:
                units.append(child)

    expand(root, "")
    position = {id(u): i for i, u in enumerate(units)}
    return units, loose, [position[id(m)] for m in features]


def _create_features(
    model_name: str,
    *,
    in_channels: int,
    pretrained: bool | str,
    out_indices: Sequence[int] | None,
    timm_kwargs: Mapping[str, Any],
) -> nn.Module:
    import timm

    kwargs: dict[str, Any] = {"in_chans": in_channels, **timm_kwargs}
    load: dict[str, Any] = {"pretrained": pretrained is True}
    if isinstance(pretrained, str):
        path = weights_path(pretrained)
        check_weights_fit(model_name, path, kwargs)
        load = {"pretrained": True, "pretrained_cfg_overlay": {"file": str(path)}}
    if out_indices is not None:
        kwargs["out_indices"] = tuple(out_indices)
    if pretrained is True:
        offline_unless_hub_reachable()
    try:
        return timm.create_model(model_name, features_only=True, **kwargs, **load)
    except TypeError as err:
        unknown = _unknown_kwarg(model_name, err)
        if unknown is None:
            raise
        raise unknown from err
    except IndexError as err:
        if out_indices is None:
            raise
        raise ParamError("out_indices", f"{model_name} has no stage {list(out_indices)}") from err
    except (OSError, RuntimeError) as err:
        if pretrained is True and (isinstance(err, OSError) or "pretrained" in str(err)):
            raise download_failed(model_name, err) from err
        if isinstance(pretrained, str) and "state_dict" in str(err):  # size mismatch on load
            raise ParamError("pretrained", f"weights in '{pretrained}' do not fit: {err}") from err
        raise


def _unknown_kwarg(model_name: str, err: TypeError) -> ParamError | None:
    """A timm model's "unexpected keyword argument" as a config error with did-you-mean."""
    match = _UNEXPECTED_KWARG.search(str(err))
    if not match:
        return None
    class_name, key = match.groups()
    from timm.models import get_arch_name, model_entrypoint

    module = importlib.import_module(model_entrypoint(get_arch_name(model_name)).__module__)
    cls = getattr(module, class_name, None)
    known = list(inspect.signature(cls).parameters) if inspect.isclass(cls) else []
    known = ["in_channels", "pretrained", "out_indices", *(k for k in known if k not in _RESERVED)]
    return ParamError(
        key, f"timm's {class_name} has no parameter '{key}'{did_you_mean(key, known)}"
    )
