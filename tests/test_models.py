"""Models from config: every piece with several real timm backbones, weights files, config errors."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest
import safetensors.torch
import timm
import torch
import torch.nn.functional as F

from okc.errors import ConfigError, ConfigErrors, OkcError, at, under
from okc.models import Model, build_model, check_model_params
from okc.models.backbones import TINY, timm_lookup, timm_names
from okc.models.heads.arcface import default_scale
from okc.registry import BACKBONES

TINY_BACKBONES = ["test_resnet", "test_efficientnet", "resnet18"]  # + resnet18: a real-size stem
X = torch.randn(2, 3, 32, 32)


def build(backbone: str = "test_resnet", **params: Any) -> Model:
    with at("task.params"):  # where a task places the model's errors
        return build_model({"backbone_name": backbone, **params}).eval()


def prefixes(model: Model) -> set[str]:
    return {key.split(".")[0] for key in model.state_dict()}


# --- backbones ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "resnet18",
        "resnet50",
        "efficientnet_b0",
        "convnext_tiny",
        "hrnet_w18",
        "cspdarknet53",
        "vit_small_patch16_224",
    ],
)
def test_timm_names_give_stage_maps_matching_their_contract(name: str) -> None:
    params = {"img_size": 32} if name.startswith("vit") else {}
    backbone = BACKBONES.get(name)(**params).eval()
    with torch.no_grad():
        maps = backbone(torch.randn(1, 3, 32, 32))
    assert [m.shape[1] for m in maps] == backbone.out_channels
    assert [32 // m.shape[-1] for m in maps] == backbone.out_strides


def test_channels_last_timm_models_return_nchw_maps() -> None:
    backbone = BACKBONES.get("test_mambaout")()
    maps = backbone(X)
    assert backbone.channels_last_output
    assert [tuple(m.shape) for m in maps] == [
        (2, c, 32 // s, 32 // s)
        for c, s in zip(backbone.out_channels, backbone.out_strides, strict=True)
    ]


def test_out_indices_and_timm_kwargs_pass_through() -> None:
    backbone = BACKBONES.get("test_resnet")(out_indices=[2, 4], drop_path_rate=0.1)
    assert backbone.out_strides == [8, 32]
    assert [m.shape[1] for m in backbone(X)] == backbone.out_channels


def test_timm_fallback_and_tiny_registered_backbones() -> None:
    assert timm_lookup("not_a_model") is None
    assert timm_lookup("resnet18.not_a_tag") is None
    assert timm_lookup("resnet18.a1_in1k") is not None
    assert "convnext_tiny" in timm_names()
    assert set(TINY) <= set(BACKBONES.registered())
    assert BACKBONES.get("test_vit").__name__ == "test_vit"


# --- pieces on several backbones ------------------------------------------------------------------


@pytest.mark.parametrize("backbone", TINY_BACKBONES)
@pytest.mark.parametrize(
    ("pooling_type", "factor"), [("avg", 1), ("max", 1), ("avgmax", 1), ("catavgmax", 2)]
)
def test_pooling_and_classification_head(backbone: str, pooling_type: str, factor: int) -> None:
    model = build(
        backbone,
        pooling_name="Pooling",
        pooling_params={"pooling_type": pooling_type},
        head_name="ClassificationHead",
        head_params={"num_classes": 7, "drop_rate": 0.1},
    )
    last = model.backbone.out_channels[-1]
    assert model.forward_features(X).shape == (2, last * factor) == (2, model.embedding_channels)
    assert model(X).shape == (2, 7)
    assert prefixes(model) == {"backbone", "head"}


@pytest.mark.parametrize("backbone", TINY_BACKBONES)
@pytest.mark.parametrize("neck", ["UNet", "FPN"])
def test_necks_with_segmentation_head_predict_at_input_size(backbone: str, neck: str) -> None:
    model = build(
        backbone, neck_name=neck, head_name="SegmentationHead", head_params={"num_classes": 3}
    )
    features = model.forward_features(X)
    assert features.shape[1] == model.neck.out_channels
    assert features.shape[-1] == 32 // model.neck.out_stride
    assert model(X).shape == (2, 3, 32, 32)
    odd = torch.randn(1, 3, 33, 47)  # stages that do not halve exactly
    assert model(odd).shape == (1, 3, 33, 47)
    assert prefixes(model) == {"backbone", "neck", "head"}


@pytest.mark.parametrize("backbone", TINY_BACKBONES)
@pytest.mark.parametrize("neck", ["UNet", "FPN"])
def test_neck_pooling_head_chain(backbone: str, neck: str) -> None:
    model = build(
        backbone,
        neck_name=neck,
        pooling_name="GeM",
        head_name="LinearHead",
        head_params={"out_channels": 16, "normalize": True},
    )
    out = model(X)
    assert out.shape == (2, 16)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(2))
    assert prefixes(model) == {"backbone", "neck", "pooling", "head"}


@pytest.mark.parametrize("backbone", TINY_BACKBONES)
def test_spoc_arcface_and_no_head(backbone: str) -> None:
    model = build(
        backbone, pooling_name="SPOC", head_name="ArcFaceHead", head_params={"num_classes": 5}
    )
    assert model(X).shape == (2, 5)
    assert model(X, torch.tensor([0, 4])).shape == (2, 5)
    headless = build(backbone, neck_name="FPN", neck_params={"out_channels": 8}, pooling_name="GeM")
    assert headless(X).shape == (2, 8)


def test_vit_backbone_with_unet_and_pooling() -> None:
    model = build(
        "test_vit",
        backbone_params={"img_size": 32},
        neck_name="UnetNeck",  # TorchOk's name for the same decoder
        pooling_name="Pooling",
        head_name="ClassificationHead",
        head_params={"num_classes": 2},
    )
    assert model(X).shape == (2, 2)


def test_unet_decodes_past_the_finest_stage_torchok_style() -> None:
    model = build(
        "resnet18", neck_name="UNet", neck_params={"decoder_channels": [64, 32, 16, 16, 8]}
    )
    assert model.neck.out_stride == 1
    assert model.forward_features(X).shape == (2, 8, 32, 32)


def test_forward_is_forward_features_then_head() -> None:
    model = build(
        "test_efficientnet",
        neck_name="UNet",
        head_name="SegmentationHead",
        head_params={"num_classes": 2},
    )
    features = model.forward_features(X)
    torch.testing.assert_close(model.forward_head(features, image_size=(32, 32)), model(X))


def test_single_class_head_gives_flat_logits() -> None:
    model = build(
        pooling_name="Pooling", head_name="ClassificationHead", head_params={"num_classes": 1}
    )
    assert model(X).shape == (2,)


def test_gem_learns_p_and_is_average_pooling_at_p_one() -> None:
    model = build(pooling_name="GeM", pooling_params={"p": 1.0})
    assert "pooling.p" in dict(model.named_parameters())
    stage = model.backbone(X)[-1].clamp(min=1e-6)
    torch.testing.assert_close(model.forward_features(X), stage.mean(dim=(2, 3)))
    model.forward_features(X).sum().backward()
    assert model.pooling.p.grad is not None


def test_arcface_margin_only_in_training_with_a_target() -> None:
    model = build(
        pooling_name="Pooling",
        head_name="ArcFaceHead",
        head_params={"num_classes": 4, "margin": 0.3},
    )
    head, target = model.head, torch.tensor([1, 3])
    embeddings = model.forward_features(X)
    cosine = F.linear(F.normalize(embeddings), F.normalize(head.weight))
    scale = default_scale(4)
    torch.testing.assert_close(model(X, target), scale * cosine)  # eval: no margin, normalised
    model.train()
    logits = model.head(embeddings, target)
    rows = torch.arange(2)
    angle = torch.acos(cosine[rows, target])
    torch.testing.assert_close(logits[rows, target], scale * torch.cos(angle + 0.3))
    others = torch.ones_like(cosine, dtype=torch.bool)
    others[rows, target] = False
    torch.testing.assert_close(logits[others], scale * cosine[others])
    logits.sum().backward()
    assert torch.isfinite(head.weight.grad).all()


def test_arcface_gradients_stay_finite_under_bf16_autocast() -> None:
    head = build(
        pooling_name="Pooling", head_name="ArcFaceHead", head_params={"num_classes": 4}
    ).head.train()
    x = torch.randn(8, head.weight.shape[1], requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = head(x, torch.arange(8) % 4)
    logits.sum().backward()
    assert logits.dtype == torch.float32
    assert torch.isfinite(x.grad).all() and torch.isfinite(head.weight.grad).all()


# --- pretrained weights ---------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
@pytest.mark.parametrize(
    ("backbone", "kwargs"), [("test_resnet", {}), ("test_vit", {"img_size": 32})]
)
def test_pretrained_local_weights_file(
    tmp_path: Path, suffix: str, backbone: str, kwargs: dict[str, Any]
) -> None:
    source = timm.create_model(backbone, **kwargs).state_dict()  # as saved from the hub
    path = tmp_path / f"weights{suffix}"
    if suffix == ".pth":
        torch.save(source, path)
    else:
        safetensors.torch.save_file(source, path)
    model = build(backbone, backbone_params={"pretrained": str(path), **kwargs})
    loaded = model.backbone.body.state_dict()
    assert loaded
    for key, value in loaded.items():  # timm's ViT feature wrapper keeps the model as .model
        torch.testing.assert_close(value, source[key.removeprefix("model.")], rtol=0, atol=0)


def test_pretrained_file_adapts_to_other_input_channels(tmp_path: Path) -> None:
    path = tmp_path / "weights.pth"
    torch.save(timm.create_model("test_resnet").state_dict(), path)
    model = build(backbone_params={"pretrained": str(path), "in_channels": 1})
    assert model(torch.randn(2, 1, 32, 32)).shape[1] == model.embedding_channels


def test_pretrained_true_offline_fails_fast_with_how_to() -> None:
    start = time.monotonic()
    with pytest.raises(ConfigError) as info:
        build(backbone_params={"pretrained": True})
    assert time.monotonic() - start < 10
    message = str(info.value)
    assert message.startswith("task.params.backbone_params.pretrained: ")
    assert "pretrained: path/to/weights.safetensors" in message


def test_pretrained_missing_file_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.safetensors"
    with pytest.raises(OkcError, match=re.escape(f"no weights file at '{missing}'")):
        build(backbone_params={"pretrained": str(missing)})


def test_pretrained_file_of_another_model_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.pth"
    torch.save(timm.create_model("test_efficientnet").state_dict(), path)
    with pytest.raises(OkcError, match="does not hold test_resnet weights"):
        build(backbone_params={"pretrained": str(path)})


def test_pretrained_file_that_is_not_weights(tmp_path: Path) -> None:
    path = tmp_path / "notes.pth"
    path.write_text("hello")
    with pytest.raises(OkcError, match=r"cannot read .* as a \.safetensors or torch weights file"):
        build(backbone_params={"pretrained": str(path)})


# --- config errors --------------------------------------------------------------------------------


def messages(params: dict[str, Any]) -> list[str]:
    return [str(e) for e in under("task.params", check_model_params(params))]


def test_unknown_names_suggest_the_closest() -> None:
    assert messages({"backbone_name": "resnt18"}) == [
        "task.params.backbone_name: unknown backbone 'resnt18', did you mean 'resnet18'?"
    ]
    [neck] = messages({"backbone_name": "resnet18", "neck_name": "Unet"})
    assert neck.startswith("task.params.neck_name: unknown neck 'Unet', did you mean 'UNet'")


def test_param_typos_and_missing_params_are_reported_together() -> None:
    params = {
        "backbone_name": "resnet18",
        "pooling_name": "Pooling",
        "pooling_params": {"pooling_type": "mean"},
        "head_name": "ClassificationHead",
        "head_params": {"num_clases": 10},
    }
    assert messages(params) == [
        "task.params.pooling_params.pooling_type: "
        "expected 'avg' | 'max' | 'avgmax' | 'catavgmax', got 'mean'",
        "task.params.head_params.num_clases: "
        "ClassificationHead has no parameter 'num_clases', did you mean 'num_classes'?",
        "task.params.head_params: ClassificationHead needs 'num_classes', which is not set",
    ]
    with pytest.raises(ConfigErrors) as info:
        build_model(params)
    assert len(info.value.errors) == 3


@pytest.mark.parametrize("piece", ["neck", "pooling", "head"])
def test_channel_counts_are_never_repeated_in_config(piece: str) -> None:
    name = {"neck": "FPN", "pooling": "GeM", "head": "LinearHead"}[piece]
    params = {
        "backbone_name": "resnet18",
        "pooling_name": "GeM",
        f"{piece}_name": name,
        f"{piece}_params": {"in_channels": 512},
    }
    assert f"task.params.{piece}_params.in_channels: okc sets 'in_channels' of {name} itself; " in (
        "\n".join(messages(params))
    )


def test_backbone_values_checked_without_building(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("check_model_params must not build a timm model")

    monkeypatch.setattr(timm, "create_model", refuse)
    params = {"backbone_name": "resnet50", "backbone_params": {"in_channels": 0, "in_chans": 1}}
    assert messages(params) == [
        "task.params.backbone_params.in_chans: okc sets this itself (use in_channels)",
        "task.params.backbone_params.in_channels: must be at least 1, got 0",
    ]
    assert messages({"backbone_params": {}}) == [
        "task.params.backbone_name: required key is missing"
    ]
    assert messages({"backbone_name": "resnet18", "head_params": {"num_classes": 3}}) == [
        "task.params.head_params: is set but head_name is not"
    ]


def test_unknown_timm_kwarg_is_located_with_a_suggestion() -> None:
    with pytest.raises(ConfigError) as info:
        build(backbone_params={"drop_pat_rate": 0.1})
    assert str(info.value) == (
        "task.params.backbone_params.drop_pat_rate: "
        "timm's ResNet has no parameter 'drop_pat_rate', did you mean 'drop_path_rate'?"
    )


def test_values_rejected_while_building_name_their_key() -> None:
    with pytest.raises(ConfigError, match=r"^task\.params\.neck_params\.decoder_channels: "):
        build("resnet18", neck_name="UNet", neck_params={"decoder_channels": [8] * 9})
    with pytest.raises(ConfigError, match=r"^task\.params\.head_params\.num_classes: "):
        build(pooling_name="Pooling", head_name="ArcFaceHead", head_params={"num_classes": 1})
    with pytest.raises(ConfigError, match=r"^task\.params\.backbone_params\.out_indices: "):
        build(backbone_params={"out_indices": [9]})


def test_head_that_does_not_fit_what_comes_before() -> None:
    segmentation_after_pooling = {
        "backbone_name": "resnet18",
        "pooling_name": "Pooling",
        "head_name": "SegmentationHead",
        "head_params": {"num_classes": 2},
    }
    assert messages(segmentation_after_pooling) == [
        "task.params.pooling_name: SegmentationHead takes a feature map (N, C, H, W), but pooling "
        "'Pooling' turns the map into one vector per image; remove pooling_name"
    ]
    classification_on_a_map = {
        "backbone_name": "resnet18",
        "head_name": "ClassificationHead",
        "head_params": {"num_classes": 2},
    }
    [message] = messages(classification_on_a_map)
    assert message.startswith("task.params.head_name: ClassificationHead takes a pooled embedding")
    assert "set pooling_name (e.g. Pooling)" in message


def test_images_with_the_wrong_channel_count() -> None:
    model = build(pooling_name="Pooling")
    with pytest.raises(ConfigError) as info:
        model(torch.randn(2, 1, 32, 32))
    assert str(info.value).startswith(
        "task.params.backbone_params.in_channels: the model takes images of shape (N, 3, H, W), "
        "got a batch of shape (2, 1, 32, 32)"
    )
    with pytest.raises(ConfigError, match="got a batch of shape"):
        model(torch.randn(3, 32, 32))
