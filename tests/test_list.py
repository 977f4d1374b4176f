"""``okc list``: the names each registry resolves, with descriptions and params."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import okc
from okc.cli import main
from okc.errors import OkcError
from okc.registry import REGISTRIES


def names(listing) -> list[str]:
    return [c.name for c in listing.components]


def test_okc_components_come_with_a_line_and_their_params() -> None:
    listing = okc.list_components("heads")
    head = next(c for c in listing.components if c.name == "ClassificationHead")
    assert head.source == "okc"
    assert head.description == "Dropout → Linear."  # the docstring's first sentence
    assert head.params == ("num_classes", "drop_rate=0.0", "bias=True")  # in_channels: computed
    assert listing.libraries == {}  # heads reach no library


def test_a_class_without_a_docstring_is_described_by_its_module() -> None:
    (early,) = [c for c in okc.list_components("callbacks", "EarlyStopping").components]
    assert early.description.startswith("stop fit when a monitored value stops improving")
    assert early.params[0] == "monitor"  # required: no default


def test_aliases_say_what_they_are() -> None:
    (rich,) = okc.list_components("callbacks", "RichProgressBar").components
    assert rich.description.startswith("Another name for ProgressBar.")


def test_library_names_only_with_a_pattern_or_all() -> None:
    plain = okc.list_components("backbones")
    assert {c.source for c in plain.components} == {"okc"}
    assert plain.libraries["timm"] > 1000 and not plain.library_listed
    matched = okc.list_components("backbones", "resnet1*")
    assert {"resnet18", "resnet101"} <= set(names(matched))
    assert "test_resnet" not in names(matched)  # the pattern applies to okc's names too
    assert {c.source for c in matched.components} == {"timm"}
    assert "CrossEntropyLoss" in names(okc.list_components("losses", library=True))


def test_a_plain_word_matches_anywhere_in_the_name() -> None:
    found = names(okc.list_components("losses", "entropy"))
    assert {"MMCrossEntropyLoss", "CrossEntropyLoss"} <= set(found)  # okc's and torch.nn's
    assert all("entropy" in n.lower() for n in found)


def test_kinds_are_found_by_any_spelling() -> None:
    assert okc.list_components("backbone").kind == "backbones"
    assert okc.list_components("detection-heads").kind == "detection_heads"
    with pytest.raises(OkcError, match="unknown kind of component 'backbonez', did you mean "
                       "'backbones'"):  # fmt: skip
        okc.list_components("backbonez")


@pytest.mark.parametrize("kind", sorted(REGISTRIES))
def test_every_kind_lists(kind: str) -> None:
    listing = okc.list_components(kind)
    assert len(listing.components) == len(REGISTRIES[kind].registered())
    for component in listing.components:
        assert all(p and " " not in p.split("=")[0] for p in component.params), component


def test_your_own_components_are_listed_with_their_module(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "my_losses.py").write_text(
        "import torch\n"
        "from okc import LOSSES\n\n"
        "@LOSSES.register(override=True)\n"
        "class Focal(torch.nn.Module):\n"
        '    """Focal loss for the few hard examples.\n\n    More words."""\n\n'
        "    def __init__(self, *, gamma: float = 2.0, alpha: float) -> None:\n"
        "        super().__init__()\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    listing = okc.list_components("losses", "Focal", imports=["my_losses"])
    focal = next(c for c in listing.components if c.name == "Focal")
    assert (focal.source, focal.description, focal.params) == (
        "my_losses", "Focal loss for the few hard examples.", ("gamma=2.0", "alpha"),
    )  # fmt: skip
    with pytest.raises(OkcError, match="cannot import 'no_such_module'"):
        okc.list_components("losses", imports=["no_such_module"])
    sys.modules.pop("my_losses", None)


def test_cli_prints_plain_lines_when_piped(capsys) -> None:
    assert main(["list", "poolings"]) == 0
    lines = capsys.readouterr().out.splitlines()
    i = lines.index(next(line for line in lines if line.startswith("GeM  ")))
    assert lines[i].startswith("GeM  Generalised mean pooling")
    assert lines[i + 1] == "    params: p=3.0, eps=1e-06, learn_p=True"
    assert main(["list", "backbones", "resnet1*"]) == 0
    assert "resnet18  [timm]" in capsys.readouterr().out.splitlines()
    assert main(["list", "metrics"]) == 0
    assert "also: any torchmetrics name" in capsys.readouterr().out
    assert main(["list", "backbonez"]) == 2
    assert "did you mean 'backbones'" in capsys.readouterr().err


def test_cli_lists_the_kinds(capsys) -> None:
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for kind in REGISTRIES:
        assert kind in out
    assert "timm (" in out
