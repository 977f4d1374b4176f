"""load_checkpoint: every example of the spec's section, literally, then formats and errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from okc.config.schema import LoadCheckpoint
from okc.engine.weights import merge_load_checkpoint
from okc.errors import OkcError

KEYS = ("backbone.linear.1", "backbone.linear.2", "head.linear.1", "head.linear.2", "head.linear.3")


class SpecModel(nn.Module):
    """A model whose state dict is exactly the spec's: five scalar tensors, initially 0."""

    def __init__(self) -> None:
        super().__init__()
        for key in KEYS:
            module = self
            *parents, leaf = key.split(".")
            for part in parents:
                if not hasattr(module, part):
                    module.add_module(part, nn.Module())
                module = getattr(module, part)
            module.register_buffer(leaf, torch.tensor(0))


def weights(model: nn.Module) -> dict[str, int]:
    return {k: int(v) for k, v in model.state_dict().items()}


def save(path: str, state: dict[str, int]) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    torch.save({k: torch.tensor(v) for k, v in state.items()}, path)


@pytest.fixture
def spec_files(tmp_path, monkeypatch) -> None:
    """The spec's three checkpoints at the spec's relative paths."""
    monkeypatch.chdir(tmp_path)
    save("./task/checkpoint/path.ckpt", dict.fromkeys(KEYS, 1))
    save("./head2/checkpoint/path.ckpt", {"linear.1": 3, "linear.2": 5, "linear.3": 7})
    save("./head3_linear2/checkpoint/path.ckpt", {"linear.2": 10})


BASE = "./task/checkpoint/path.ckpt"
HEAD2 = {"head": "./head2/checkpoint/path.ckpt"}
HEAD3 = {**HEAD2, "head.linear.2": "./head3_linear2/checkpoint/path.ckpt"}


def loaded(**spec) -> dict[str, int]:
    model = SpecModel()
    merge_load_checkpoint(model, LoadCheckpoint(**spec))
    return weights(model)


@pytest.mark.usefixtures("spec_files")
def test_spec_simple_checkpoints_merge():
    assert tuple(SpecModel().state_dict()) == KEYS
    got = loaded(base_ckpt_path=BASE, overridden_name2ckpt_path=HEAD2, strict=True)
    assert got == dict(zip(KEYS, (1, 1, 3, 5, 7), strict=True))


@pytest.mark.usefixtures("spec_files")
def test_spec_overriding_keys_directly():
    got = loaded(base_ckpt_path=BASE, overridden_name2ckpt_path=HEAD3, strict=True)
    assert got == dict(zip(KEYS, (1, 1, 3, 10, 7), strict=True))


@pytest.mark.usefixtures("spec_files")
@pytest.mark.parametrize("strict", [False, True])  # excluded keys never count as missing
def test_spec_excluding_keys(strict):
    got = loaded(
        base_ckpt_path=BASE,
        overridden_name2ckpt_path=HEAD3,
        exclude_keys=("head.linear.3",),
        strict=strict,
    )
    assert got == dict(zip(KEYS, (1, 1, 3, 10, 0), strict=True))


@pytest.mark.usefixtures("spec_files")
def test_spec_absolute_model_keys_give_the_same_results():
    save(
        "./head2/checkpoint/path.ckpt", {"head.linear.1": 3, "head.linear.2": 5, "head.linear.3": 7}
    )
    assert loaded(base_ckpt_path=BASE, overridden_name2ckpt_path=HEAD2) == dict(
        zip(KEYS, (1, 1, 3, 5, 7), strict=True)
    )
    assert loaded(base_ckpt_path=BASE, overridden_name2ckpt_path=HEAD3) == dict(
        zip(KEYS, (1, 1, 3, 10, 7), strict=True)
    )


def test_torchok_docstring_example_gives_what_it_promised(tmp_path):
    """TorchOk's docstring promised this; its code put 10 under backbone.linear.1.backbone.linear.1."""
    save(str(tmp_path / "base.pt"), dict.fromkeys(KEYS, 1))
    save(str(tmp_path / "bb.pt"), {"backbone.linear.1": 5, "backbone.linear.2": 3})
    save(str(tmp_path / "bb1.pt"), {"backbone.linear.1": 10})
    got = loaded(
        base_ckpt_path=str(tmp_path / "base.pt"),
        overridden_name2ckpt_path={
            "backbone.linear.1": str(
                tmp_path / "bb1.pt"
            ),  # deeper first in the file: order is by depth
            "backbone": str(tmp_path / "bb.pt"),
        },
        exclude_keys=("head.linear.2",),
    )
    assert got == dict(zip(KEYS, (10, 3, 1, 0, 1), strict=True))


# --- real modules, formats -------------------------------------------------------------------------


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer1 = nn.Linear(2, 2)
        self.layer10 = nn.Linear(2, 2)
        self.head = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))


def filled(value: float) -> dict[str, torch.Tensor]:
    return {k: torch.full_like(v, value) for k, v in Net().state_dict().items()}


def test_exclusion_stops_at_a_dot(tmp_path):
    torch.save(filled(1.0), tmp_path / "all.pt")
    model = Net()
    before = model.layer1.weight.detach().clone()
    merge_load_checkpoint(
        model, LoadCheckpoint(base_ckpt_path=str(tmp_path / "all.pt"), exclude_keys=("layer1",))
    )
    assert torch.equal(model.layer1.weight, before)
    assert (model.layer10.weight == 1).all()


def test_leaf_overrides_of_real_modules(tmp_path):
    torch.save(filled(1.0), tmp_path / "all.pt")
    torch.save(
        {"weight": torch.full((1, 3), 7.0), "bias": torch.full((1,), 8.0)}, tmp_path / "fc.pt"
    )
    torch.save(torch.full((3,), 9.0), tmp_path / "bias.pt")  # a bare tensor
    model = Net()
    merge_load_checkpoint(
        model,
        LoadCheckpoint(
            base_ckpt_path=str(tmp_path / "all.pt"),
            overridden_name2ckpt_path={
                "head.2": str(tmp_path / "fc.pt"),
                "head.0.bias": str(tmp_path / "bias.pt"),
            },
        ),
    )
    assert (model.head[2].weight == 7).all() and (model.head[2].bias == 8).all()
    assert (model.head[0].bias == 9).all() and (model.head[0].weight == 1).all()


def test_a_whole_model_file_can_supply_one_module(tmp_path):
    torch.save(filled(1.0), tmp_path / "a.pt")
    torch.save(filled(2.0), tmp_path / "b.pt")
    model = Net()
    merge_load_checkpoint(
        model,
        LoadCheckpoint(
            base_ckpt_path=str(tmp_path / "a.pt"),
            overridden_name2ckpt_path={"head": str(tmp_path / "b.pt")},
        ),
    )
    assert (model.layer1.weight == 1).all() and (model.head[0].weight == 2).all()


@pytest.mark.parametrize(
    "wrap",
    [
        lambda sd: {"model": sd, "optimizers": [{"state": {}}], "step": 3},  # okc
        lambda sd: {"state_dict": sd, "epoch": 2, "hyper_parameters": {"lr": 0.1}},  # Lightning
        lambda sd: {f"module.{k}": v for k, v in sd.items()},  # DDP
        lambda sd: {f"_orig_mod.{k}": v for k, v in sd.items()},  # torch.compile
    ],
)
def test_checkpoint_layouts(tmp_path, wrap):
    torch.save(wrap(filled(4.0)), tmp_path / "c.ckpt")
    model = Net()
    merge_load_checkpoint(model, LoadCheckpoint(base_ckpt_path=str(tmp_path / "c.ckpt")))
    assert all((v == 4).all() for v in model.state_dict().values())


def test_safetensors(tmp_path):
    save_file(filled(5.0), str(tmp_path / "w.safetensors"))
    model = Net()
    merge_load_checkpoint(model, LoadCheckpoint(base_ckpt_path=str(tmp_path / "w.safetensors")))
    assert all((v == 5).all() for v in model.state_dict().values())


# --- errors ---------------------------------------------------------------------------------------


def test_missing_file_names_the_key_and_file(tmp_path):
    with pytest.raises(
        OkcError,
        match=r"task\.load_checkpoint\.overridden_name2ckpt_path\.head: no such file: .*nope\.pt",
    ):
        merge_load_checkpoint(
            Net(), LoadCheckpoint(overridden_name2ckpt_path={"head": str(tmp_path / "nope.pt")})
        )


def test_strict_mismatch_lists_a_few_keys(tmp_path):
    state = filled(1.0)
    state.pop("layer1.weight")
    state.update({f"extra.{i}": torch.zeros(1) for i in range(7)})
    torch.save(state, tmp_path / "c.pt")
    with pytest.raises(OkcError) as err:
        merge_load_checkpoint(Net(), LoadCheckpoint(base_ckpt_path=str(tmp_path / "c.pt")))
    text = str(err.value)
    assert text.startswith("task.load_checkpoint: ")
    assert "missing 1 model keys: layer1.weight" in text
    assert "7 unexpected keys: extra.0, extra.1, extra.2, extra.3, extra.4 and 2 more" in text
    model = Net()
    with pytest.warns(UserWarning, match="not loaded"):
        report = merge_load_checkpoint(
            model, LoadCheckpoint(base_ckpt_path=str(tmp_path / "c.pt"), strict=False)
        )
    assert report.missing == ("layer1.weight",) and len(report.unexpected) == 7
    assert (model.layer10.weight == 1).all()


def test_unknown_names_and_shapes_are_config_errors(tmp_path):
    torch.save(filled(1.0), tmp_path / "a.pt")
    a = str(tmp_path / "a.pt")
    with pytest.raises(OkcError, match=r"overridden_name2ckpt_path\.haed: .*did you mean 'head'"):
        merge_load_checkpoint(Net(), LoadCheckpoint(overridden_name2ckpt_path={"haed": a}))
    with pytest.raises(OkcError, match=r"exclude_keys\.0: .*did you mean 'layer1'"):
        merge_load_checkpoint(Net(), LoadCheckpoint(base_ckpt_path=a, exclude_keys=("layer_1",)))
    torch.save({"weight": torch.zeros(5, 5)}, tmp_path / "big.pt")
    with pytest.raises(
        OkcError, match=r"head\.0\.weight is \(5, 5\) in .*big\.pt but \(3, 2\) in the model"
    ):
        merge_load_checkpoint(
            Net(),
            LoadCheckpoint(
                base_ckpt_path=a, overridden_name2ckpt_path={"head.0": str(tmp_path / "big.pt")}
            ),
        )


class NotATensor:
    pass


def test_pickled_objects_are_refused_with_the_fix(tmp_path):
    torch.save({"state_dict": filled(1.0), "config": NotATensor()}, tmp_path / "lightning.ckpt")
    with pytest.raises(OkcError, match=r"base_ckpt_path: .*weights_only=True.*\['state_dict'\]"):
        merge_load_checkpoint(
            Net(), LoadCheckpoint(base_ckpt_path=str(tmp_path / "lightning.ckpt"))
        )


def test_nothing_to_load_is_a_no_op():
    assert merge_load_checkpoint(Net(), LoadCheckpoint()) is None
