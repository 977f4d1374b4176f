"""The one Registry mechanism: registration, lazy modules, library fallbacks, did-you-mean."""

from __future__ import annotations

import pytest
import torch
import torchmetrics

from okc.config.bind import make
from okc.config.params import problems
from okc.errors import ConfigError, ConfigErrors, at, under
from okc.registry import LOSSES, METRICS, OPTIMIZERS, SCHEDULERS, Registry, UnknownNameError


def test_register_get_and_duplicates() -> None:
    reg = Registry("widgets")

    @reg.register
    class Sprocket:
        pass

    reg.register(Sprocket, name="Cog")
    assert reg.get("Sprocket") is Sprocket and reg.get("Cog") is Sprocket
    assert "Sprocket" in reg and "Nope" not in reg
    assert reg.registered() == ["Cog", "Sprocket"]

    class Other:
        pass

    with pytest.raises(ValueError, match="'Cog' is already registered"):
        reg.register(Other, name="Cog")
    reg.register(Other, name="Cog", override=True)
    assert reg.get("Cog") is Other


def test_unknown_name_suggests_the_closest() -> None:
    reg = Registry("widgets")
    for name in ("ClassificationHead", "LinearHead", "ArcFaceHead"):
        reg.register(type(name, (), {}))
    with pytest.raises(UnknownNameError) as err:
        reg.get("ClasificationHead")
    assert (
        str(err.value) == "unknown widget 'ClasificationHead', did you mean 'ClassificationHead'?"
    )
    with pytest.raises(
        UnknownNameError, match="known: ArcFaceHead, ClassificationHead, LinearHead"
    ):
        reg.get("Zzz")


def test_empty_registry_says_nothing_is_registered() -> None:
    reg = Registry("gizmos", modules=["okc.not_written_yet"])
    with pytest.raises(UnknownNameError, match="nothing is registered for this kind yet"):
        reg.get("Anything")


def test_broken_module_surfaces(tmp_path, monkeypatch) -> None:
    (tmp_path / "okc_broken_mod.py").write_text("import okc_missing_dependency\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError, match="okc_missing_dependency"):
        Registry("x", modules=["okc_broken_mod"]).get("y")


@pytest.mark.parametrize(
    ("registry", "name", "expected"),
    [
        (LOSSES, "CrossEntropyLoss", torch.nn.CrossEntropyLoss),
        (LOSSES, "MSELoss", torch.nn.MSELoss),
        (OPTIMIZERS, "AdamW", torch.optim.AdamW),
        (SCHEDULERS, "OneCycleLR", torch.optim.lr_scheduler.OneCycleLR),
        (SCHEDULERS, "ReduceLROnPlateau", torch.optim.lr_scheduler.ReduceLROnPlateau),
        (METRICS, "Accuracy", torchmetrics.Accuracy),
        (METRICS, "MulticlassF1Score", torchmetrics.classification.MulticlassF1Score),
    ],
)
def test_library_fallbacks(registry: Registry, name: str, expected: type) -> None:
    assert registry.get(name) is expected


@pytest.mark.parametrize(
    ("registry", "typo", "suggestion"),
    [
        (LOSSES, "CrossEntropyLos", "CrossEntropyLoss"),
        (OPTIMIZERS, "Adamw", "AdamW"),
        (SCHEDULERS, "CosineAnealingLR", "CosineAnnealingLR"),
        (METRICS, "Accuray", "Accuracy"),
    ],
)
def test_fallback_names_take_part_in_did_you_mean(registry: Registry, typo: str, suggestion: str):
    with pytest.raises(UnknownNameError, match=f"did you mean '{suggestion}'"):
        registry.get(typo)


def test_non_losses_of_torch_nn_are_not_losses() -> None:
    assert "Linear" not in LOSSES
    assert "Optimizer" not in OPTIMIZERS


def test_check_params_against_signatures() -> None:
    errors = problems(
        torch.optim.SGD,
        {"lr": 0.1, "momentm": 0.9, "nesterov": "yes", "params": []},
        injected=("params",),
    )
    assert [str(e) for e in under("optimization.0.optimizer.params", errors)] == [
        "optimization.0.optimizer.params.momentm: SGD has no parameter 'momentm', "
        "did you mean 'momentum'?",
        "optimization.0.optimizer.params.nesterov: expected bool, got 'yes'",
        "optimization.0.optimizer.params.params: okc sets 'params' of SGD itself; remove it",
    ]


def test_make_reports_missing_and_constructor_errors() -> None:
    reg = Registry("layers")
    reg.register(torch.nn.Linear)
    with pytest.raises(ConfigErrors, match=r"^x\.params: Linear needs 'out_features'"), at("x"):
        make(reg, "Linear", {"in_features": 3})
    with pytest.raises(ConfigError, match=r"^x\.name: unknown loss 'L1Los'"), at("x"):
        make(LOSSES, "L1Los", {})
    with (
        pytest.raises(ConfigErrors, match=r"^m\.params\.task: expected 'binary' \| 'multi"),
        at("m"),
    ):
        make(METRICS, "Accuracy", {"task": "nonsense"})
    # errors raised by the constructor itself are reported at the params' key path
    with pytest.raises(ConfigError, match=r"^m\.params: Accuracy: .*num_classes"), at("m"):
        make(METRICS, "Accuracy", {"task": "multiclass"})
