"""Losses: JointLoss (the weighted sum the task trains on) and okc's registered losses.

Importing this package registers ``BCEWithLogitsLoss`` (TorchOk's variant), ``DiceLoss``,
``ContrastiveLoss`` and ``NT_XentLoss``; every other ``torch.nn`` loss resolves by name.
"""

from okc.losses import bce, contrastive, dice  # noqa: F401 - registration
from okc.losses.joint import JointLoss, build_joint_loss, check_joint_loss

__all__ = ["JointLoss", "build_joint_loss", "check_joint_loss"]
