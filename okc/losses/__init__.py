"""Losses: JointLoss (the weighted sum the task trains on) and okc's registered losses.

Importing this package registers ``BCEWithLogitsLoss`` (TorchOk's variant), ``DiceLoss``,
``ContrastiveLoss``, ``NT_XentLoss`` and ``TripletMarginLoss`` (torch's, plus in-batch mining);
every other ``torch.nn`` loss resolves by name.
"""

from okc.losses import bce, contrastive, dice, triplet  # noqa: F401 - registration
from okc.losses.joint import JointLoss, build_joint_loss, check_joint_loss

__all__ = ["JointLoss", "build_joint_loss", "check_joint_loss"]
