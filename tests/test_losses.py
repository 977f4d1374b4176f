"""JointLoss (TorchOk's own unit test, tags, checks, compile) and okc's losses vs hand computation."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from okc.config import schema
from okc.errors import OkcError, under
from okc.losses import JointLoss, build_joint_loss, check_joint_loss
from okc.losses.bce import BCEWithLogitsLoss
from okc.losses.contrastive import ContrastiveLoss, NT_XentLoss
from okc.losses.dice import DiceLoss
from okc.registry import LOSSES


# TorchOk's test losses, registered for real under names no one else uses.
@LOSSES.register(name="okc_test_Loss1")
class Loss1(nn.Module):
    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return (10 * input - target).abs()


@LOSSES.register(name="okc_test_Loss2")
class Loss2(nn.Module):
    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return (20 * input - target).abs()


XY = {"x": torch.tensor(1.0), "y": torch.tensor(5.0)}


def joint(weights=(None, None), tags=("loss1", "loss2"), **kw) -> schema.JointLoss:
    losses = tuple(
        schema.Loss(
            name=f"okc_test_Loss{i + 1}", mapping={"input": "x", "target": "y"}, tag=t, weight=w
        )
        for i, (t, w) in enumerate(zip(tags, weights, strict=True))
    )
    return schema.JointLoss(losses=losses, **kw)


def messages(err: pytest.ExceptionInfo) -> str:
    return str(err.value)


# --- JointLoss ------------------------------------------------------------------------------------


def test_torchok_weighted_sum_and_raw_tagged_values():
    total, parts = build_joint_loss(joint(weights=(0.7, 0.3)))(XY)
    assert total.item() == pytest.approx(8.0)
    assert parts["loss1"].item() == 5.0 and parts["loss2"].item() == 15.0


def test_torchok_no_weights_are_equal_and_normalized():
    total, _ = build_joint_loss(joint())(XY)
    assert total.item() == pytest.approx(10.0)


def test_torchok_mixed_weights_are_an_error_at_the_key():
    with pytest.raises(OkcError, match=r"joint_loss\.losses\.1\.weight"):
        build_joint_loss(joint(weights=(0.7, None)))


def test_weights_normalize_to_one_or_stay_raw():
    loss = build_joint_loss(joint(weights=(200, 100)))
    assert loss.weights == pytest.approx((2 / 3, 1 / 3))
    raw = build_joint_loss(joint(weights=(200, 100), normalize_weights=False))
    assert raw(XY)[0].item() == pytest.approx(200 * 5 + 100 * 15)
    with pytest.raises(OkcError, match="sum to 0"):
        build_joint_loss(joint(weights=(1, -1)))


def test_untagged_losses_get_unique_names_and_tags_give_modules():
    spec = schema.JointLoss(
        losses=tuple(
            schema.Loss(name="CrossEntropyLoss", mapping={"input": "logits", "target": "y"}, tag=t)
            for t in (None, None, "CrossEntropyLoss_1")
        )
    )
    loss = build_joint_loss(spec)
    assert loss.tags == ("CrossEntropyLoss", "CrossEntropyLoss_2", "CrossEntropyLoss_1")
    assert loss["CrossEntropyLoss_1"] is loss.losses[2]
    with pytest.raises(KeyError, match="no loss tagged 'nope'"):
        loss["nope"]
    out = {"logits": torch.randn(4, 3), "y": torch.tensor([0, 1, 2, 1])}
    total, parts = loss(out)
    expected = nn.functional.cross_entropy(out["logits"], out["y"])
    assert set(parts) == set(loss.tags)
    torch.testing.assert_close(total, expected)  # three equal parts, weights 1/3 each


@pytest.mark.parametrize(
    ("tags", "where", "what"),
    [
        (("loss", None), r"losses\.0\.tag", "names the total"),
        (("a", "a"), r"losses\.1\.tag", "already"),
    ],
)
def test_reserved_and_duplicate_tags_are_rejected(tags, where, what):
    with pytest.raises(OkcError, match=where) as err:
        build_joint_loss(joint(tags=tags))
    assert what in messages(err)


def test_check_outputs_names_the_mapping_key_and_lists_outputs():
    loss = build_joint_loss(joint())
    assert loss.required_keys == {"x", "y"}
    loss.check_outputs({"x", "y", "extra"})
    with pytest.raises(OkcError) as err:
        loss.check_outputs({"x", "prediction"})
    text = messages(err)
    assert (
        "joint_loss.losses.0.mapping.target" in text
        and "joint_loss.losses.1.mapping.target" in text
    )
    assert "it produces: prediction, x" in text


def test_check_finds_names_params_and_mapping_problems_at_their_paths():
    spec = schema.JointLoss(
        losses=(
            schema.Loss(name="CrossEntropyLos", mapping={"input": "a", "target": "b"}),
            schema.Loss(name="MSELoss", mapping={"inptu": "a", "target": "b"}),
            schema.Loss(
                name="DiceLoss", mapping={"input": "a", "target": "b"}, params={"mode": "x"}
            ),
            schema.Loss(name="NT_XentLoss", mapping={"emb1": "a"}),
        )
    )
    errors = {e.path: e.message for e in under("joint_loss", check_joint_loss(spec))}
    assert "CrossEntropyLoss" in errors["joint_loss.losses.0.name"]
    assert "did you mean 'input'" in errors["joint_loss.losses.1.mapping.inptu"]
    assert "needs 'input'" in errors["joint_loss.losses.1.mapping"]
    assert "expected" in errors["joint_loss.losses.2.params.mode"]
    assert "needs 'emb2'" in errors["joint_loss.losses.3.mapping"]
    with pytest.raises(OkcError, match=r"joint_loss\.losses\.0\.name"):
        build_joint_loss(spec)


def test_forward_compiles_without_graph_breaks():
    loss = JointLoss(
        [nn.CrossEntropyLoss(), DiceLoss(mode="multiclass")],
        mappings=[{"input": "logits", "target": "mask"}] * 2,
        weights=[1.0, 2.0],
    )
    out = {"logits": torch.randn(2, 3, 4, 4), "mask": torch.randint(0, 3, (2, 4, 4))}
    compiled = torch.compile(loss, fullgraph=True, backend="eager")
    (total, parts), (c_total, c_parts) = loss(out), compiled(out)
    torch.testing.assert_close(c_total, total)
    torch.testing.assert_close(c_parts, parts)


def test_class_weights_written_as_lists_become_tensors():
    spec = schema.JointLoss(
        losses=(
            schema.Loss(
                name="CrossEntropyLoss",
                mapping={"input": "logits", "target": "y"},
                params={"weight": [1, 3]},
            ),
        )
    )
    out = {"logits": torch.randn(4, 2), "y": torch.tensor([0, 1, 1, 0])}
    expected = nn.functional.cross_entropy(out["logits"], out["y"], weight=torch.tensor([1.0, 3.0]))
    torch.testing.assert_close(build_joint_loss(spec)(out)[0], expected)


# --- BCEWithLogitsLoss ----------------------------------------------------------------------------


def test_bce_is_torchs_loss_when_nothing_is_ignored():
    assert LOSSES.get("BCEWithLogitsLoss") is BCEWithLogitsLoss
    logits, target = torch.randn(4, 3), torch.randint(0, 2, (4, 3))
    for reduction in ("mean", "sum", "none"):
        ours = BCEWithLogitsLoss(reduction=reduction, pos_weight=[1.0, 2.0, 3.0])(logits, target)
        theirs = nn.BCEWithLogitsLoss(reduction=reduction, pos_weight=torch.tensor([1.0, 2.0, 3.0]))
        torch.testing.assert_close(ours, theirs(logits, target.float()))


def bce(x: float, t: float) -> float:
    return -(t * math.log(1 / (1 + math.exp(-x))) + (1 - t) * math.log(1 - 1 / (1 + math.exp(-x))))


def test_bce_ignores_targets_at_ignore_index():
    logits = torch.tensor([0.5, -1.0, 2.0, 3.0], requires_grad=True)
    target = torch.tensor([1.0, 0.0, -1.0, -1.0])
    loss = BCEWithLogitsLoss()(logits, target)
    assert loss.item() == pytest.approx((bce(0.5, 1) + bce(-1.0, 0)) / 2, rel=1e-6)
    loss.backward()
    assert logits.grad[2:].abs().sum() == 0
    none = BCEWithLogitsLoss(reduction="none")(logits, target)
    assert none.shape == (4,) and none[2:].abs().sum() == 0
    all_ignored = BCEWithLogitsLoss()(logits, torch.full((4,), -1.0))
    assert all_ignored.item() == 0.0


def test_bce_reads_pos_weight_from_json(tmp_path):
    path = tmp_path / "w.json"
    path.write_text(json.dumps({"0": 1.0, "2": 4.0}))
    assert BCEWithLogitsLoss(pos_weight=str(path)).pos_weight.tolist() == [1.0, 1.0, 4.0]
    with pytest.raises(OkcError, match=r"joint_loss\.losses\.0\.params"):
        build_joint_loss(
            schema.JointLoss(
                losses=(
                    schema.Loss(
                        name="BCEWithLogitsLoss",
                        mapping={"input": "a", "target": "b"},
                        params={"pos_weight": str(tmp_path / "missing.json")},
                    ),
                )
            )
        )


# --- DiceLoss -------------------------------------------------------------------------------------


def test_dice_binary_by_hand():
    probs = torch.tensor([[0.9, 0.2, 0.6, 0.1]])
    target = torch.tensor([[1, 0, 1, 1]])
    inter, card = 0.9 + 0.6 + 0.1, (0.9 + 0.2 + 0.6 + 0.1) + 3
    loss = DiceLoss(mode="binary", from_logits=False)(probs, target)
    assert loss.item() == pytest.approx(1 - 2 * inter / card, rel=1e-6)
    logits = torch.logit(probs)
    assert DiceLoss(mode="binary")(logits, target).item() == pytest.approx(loss.item(), rel=1e-5)
    log = DiceLoss(mode="binary", from_logits=False, log_loss=True)(probs, target)
    assert log.item() == pytest.approx(-math.log(2 * inter / card), rel=1e-6)


def test_dice_multiclass_by_hand_zeroes_absent_classes_and_selects_classes():
    # One image of 3 pixels, 3 classes; class 2 never appears in the target.
    probs = torch.tensor([[[0.7, 0.2, 0.1], [0.2, 0.5, 0.3], [0.1, 0.3, 0.6]]])  # (N=1, C=3, P=3)
    target = torch.tensor([[0, 1, 1]])
    per_class = [
        1 - 2 * 0.7 / (1.0 + 1),  # class 0: inter p0[0]; card Σp0 + 1 pixel
        1 - 2 * (0.5 + 0.3) / (1.0 + 2),
        0.0,  # absent from the target: zeroed
    ]
    dice = DiceLoss(mode="multiclass", from_logits=False)
    assert dice(probs, target).item() == pytest.approx(sum(per_class) / 3, rel=1e-6)
    picked = DiceLoss(mode="multiclass", from_logits=False, classes=[1])
    assert picked(probs, target).item() == pytest.approx(per_class[1], rel=1e-6)


def test_dice_ignore_index_equals_dropping_the_pixels():
    logits = torch.randn(2, 3, 5)
    target = torch.randint(0, 3, (2, 5))
    target[0, 1] = target[1, 3] = 255
    keep = target != 255
    full = DiceLoss(mode="multiclass", ignore_index=255)(logits, target)
    # the same pixels, gathered into a batch of one without the ignored ones
    kept = DiceLoss(mode="multiclass")(
        logits.permute(1, 0, 2)[:, keep].unsqueeze(0), target[keep].unsqueeze(0)
    )
    torch.testing.assert_close(full, kept)


def test_dice_multilabel_matches_binary_per_channel():
    logits, target = torch.randn(2, 2, 4, 4), torch.randint(0, 2, (2, 2, 4, 4))
    target[:, :, 0, 0] = 1  # both channels have positives
    multi = DiceLoss(mode="multilabel")(logits, target)
    per = [DiceLoss(mode="binary")(logits[:, c], target[:, c]) for c in range(2)]
    torch.testing.assert_close(multi, sum(per) / 2)


# --- ContrastiveLoss and NT_XentLoss --------------------------------------------------------------


def test_contrastive_by_hand():
    emb1 = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    emb2 = torch.tensor([[0.0, 1.0], [3.0, 4.0]])
    R = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # distances: [[1, 5], [sqrt(9+9)=4.243, 0]]; margin 2
    d10 = math.sqrt(18)
    rows = [1.0**2 + max(0, 2 - 5) ** 2, max(0, 2 - d10) ** 2 + 0.0]
    loss = ContrastiveLoss(margin=2.0)
    assert loss(emb1, emb2, R).item() == pytest.approx(sum(rows) / 2, rel=1e-5)
    summed = ContrastiveLoss(margin=2.0, reduction="sum", reg="L1", eps=0.1)(emb1, emb2, R)
    assert summed.item() == pytest.approx(sum(rows) + 0.1 * (0 + 7), rel=1e-5)
    none = ContrastiveLoss(margin=2.0, reduction="none", reg="L2", eps=0.1)(emb1, emb2, R)
    torch.testing.assert_close(none, torch.tensor([rows[0], rows[1] + 0.1 * 5]))


def test_contrastive_gradient_is_finite_on_a_batch_against_itself():
    emb = torch.randn(6, 4, requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    R = (labels[:, None] == labels[None, :]).float()
    ContrastiveLoss(margin=1.0)(emb, emb, R).backward()
    assert torch.isfinite(emb.grad).all()


def nt_xent_by_hand(rows: list[list[float]], cols: list[list[float]], t: float) -> float:
    batch = len(rows) // 2
    total = 0.0
    for i, r in enumerate(rows):
        sims = [sum(a * b for a, b in zip(r, c, strict=True)) / t for c in cols]
        positive = (i + batch) % (2 * batch)
        logits = [s for j, s in enumerate(sims) if j != i]  # own similarity masked out
        total += -sims[positive] + math.log(sum(math.exp(s) for s in logits))
    return total / len(rows)


def test_nt_xent_by_hand_with_and_without_memory():
    emb1, emb2 = torch.tensor([[1.0, 0.0], [0.6, 0.8]]), torch.tensor([[0.8, 0.6], [0.0, 1.0]])
    memory = torch.tensor([[-1.0, 0.0]])
    rows = torch.cat([emb1, emb2]).tolist()
    got = NT_XentLoss(temperature=0.5)(emb1, emb2)
    assert got.item() == pytest.approx(nt_xent_by_hand(rows, rows, 0.5), rel=1e-5)
    got = NT_XentLoss(temperature=0.5)(emb1, emb2, memory)
    assert got.item() == pytest.approx(
        nt_xent_by_hand(rows, [*rows, *memory.tolist()], 0.5), rel=1e-5
    )
