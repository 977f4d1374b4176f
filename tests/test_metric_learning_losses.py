"""Metric-learning losses: contrastive with in-batch mining, triplet with pytorch-metric-learning
miners, each against a brute-force loop."""

from __future__ import annotations

import pytest
import torch

from okc.config.schema import JointLoss, Loss
from okc.losses import build_joint_loss, check_joint_loss
from okc.losses.contrastive import ContrastiveLoss
from okc.losses.triplet import TripletMarginLoss
from okc.registry import LOSSES


def test_contrastive_hard_mining_by_hand() -> None:
    emb = torch.tensor([[0.0, 0.0], [3.0, 4.0], [0.0, 1.0], [6.0, 8.0]])
    labels = torch.tensor([0, 0, 1, 1])
    R = (labels[:, None] == labels[None, :]).float()
    dist = torch.cdist(emb, emb)
    margin = 6.0
    expected = []
    for i in range(4):
        pos = max(dist[i, j].item() for j in range(4) if labels[j] == labels[i])
        neg = min(dist[i, j].item() for j in range(4) if labels[j] != labels[i])
        expected.append(pos**2 + max(0.0, margin - neg) ** 2)
    loss = ContrastiveLoss(margin=margin, mining="hard", reduction="none")
    torch.testing.assert_close(loss(emb, emb, R), torch.tensor(expected))
    # a sample with no irrelevant item in the batch gets no negative term
    alone = ContrastiveLoss(margin=margin, mining="hard", reduction="none")
    assert alone(emb[:2], emb[:2], torch.ones(2, 2)).tolist() == pytest.approx([25.0, 25.0])


def test_contrastive_hard_mining_gradient_is_finite_against_itself() -> None:
    emb = torch.randn(8, 4, requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    R = (labels[:, None] == labels[None, :]).float()
    ContrastiveLoss(margin=1.0, mining="hard")(emb, emb, R).backward()
    assert torch.isfinite(emb.grad).all() and emb.grad.abs().sum() > 0
    bad = Loss(name="ContrastiveLoss", mapping={}, params={"margin": 1, "mining": "semi"})
    errors = {e.path: e.message for e in check_joint_loss(JointLoss(losses=(bad,)))}
    assert errors["losses.0.params.mining"] == "expected 'all' | 'hard', got 'semi'"


def triplets(seed: int = 0, num: int = 6, dim: int = 5) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(num, dim, generator=g) for _ in range(3))


@pytest.mark.parametrize(
    "params", [{}, {"margin": 0.3, "p": 1.0, "swap": True}, {"reduction": "sum"},
               {"reduction": "none", "eps": 1e-3}],
)  # fmt: skip
def test_triplet_without_mining_is_torchs_loss(params: dict) -> None:
    a, p, n = triplets()
    expected = torch.nn.TripletMarginLoss(**params)(a, p, n)
    torch.testing.assert_close(TripletMarginLoss(**params)(a, p, n), expected)
    assert LOSSES.get("TripletMarginLoss") is TripletMarginLoss  # the config name is okc's


def mined_by_hand(a: torch.Tensor, p: torch.Tensor, n: torch.Tensor, mining: str, margin: float):
    """Every anchor against its positive and every other image of the batch as a negative."""
    ref = torch.cat([p, n])
    losses = []
    for i in range(len(a)):
        d_ap = (a[i] - p[i]).norm().item()
        negatives = [(a[i] - r).norm().item() for j, r in enumerate(ref) if j != i]
        if mining == "batch_hard":
            chosen = [min(negatives)]
        elif mining == "semihard":
            chosen = [d for d in negatives if 0 < d - d_ap <= margin]
        else:  # hard
            chosen = [d for d in negatives if d - d_ap <= 0]
        losses += [max(0.0, d_ap - d + margin) for d in chosen]
    return losses


@pytest.mark.parametrize("mining", ["batch_hard", "semihard", "hard"])
def test_triplet_mining_equals_brute_force(mining: str) -> None:
    a, p, n = triplets(seed=1, num=8)
    p = a + 0.8 * p  # positives near their anchors: every kind of triplet occurs
    margin = 1.5
    losses = mined_by_hand(a, p, n, mining, margin)
    assert losses  # the case is not vacuous
    for reduction, expected in (("mean", sum(losses) / len(losses)), ("sum", sum(losses))):
        loss = TripletMarginLoss(margin=margin, mining=mining, reduction=reduction)
        assert loss(a, p, n).item() == pytest.approx(expected, rel=1e-5)


def test_triplet_mining_trains_and_handles_an_empty_mine() -> None:
    a, p, n = (t.requires_grad_() for t in triplets(seed=2))
    TripletMarginLoss(mining="batch_hard").forward(a, p, n).backward()
    assert all(torch.isfinite(t.grad).all() for t in (a, p, n))
    far = TripletMarginLoss(mining="hard", margin=0.1)
    # negatives far away and positives on the anchors: nothing is hard, the loss is a graph-
    # connected zero
    value = far(a, a.detach().clone(), n.detach() + 100)
    assert value.item() == 0.0 and value.requires_grad


def test_triplet_bad_combinations_name_the_parameter() -> None:
    with pytest.raises(ValueError, match="swap: is not available with mining: semihard"):
        TripletMarginLoss(mining="semihard", swap=True)
    with pytest.raises(ValueError, match="reduction: none is not available with mining"):
        TripletMarginLoss(mining="hard", reduction="none")
    bad = Loss(name="TripletMarginLoss", mapping={}, params={"mining": "easy"})
    errors = {e.path: e.message for e in check_joint_loss(JointLoss(losses=(bad,)))}
    assert "'none' | 'batch_hard'" in errors["losses.0.params.mining"]


def test_torchoks_triplet_config_maps_and_builds() -> None:
    mapping = {"anchor": "anchor", "positive": "positive", "negative": "negative"}
    spec = JointLoss(losses=(Loss(name="TripletMarginLoss", mapping=mapping),))
    assert check_joint_loss(spec) == []
    joint = build_joint_loss(spec)
    a, p, n = triplets()
    total, _ = joint({"anchor": a, "positive": p, "negative": n})
    torch.testing.assert_close(total, torch.nn.functional.triplet_margin_loss(a, p, n))
    bad = JointLoss(losses=(Loss(name="TripletMarginLoss", mapping=mapping,
                                 params={"mining": "hard", "swap": True}),))  # fmt: skip
    with pytest.raises(Exception, match=r"joint_loss.losses.0.params.swap"):
        build_joint_loss(bad)
