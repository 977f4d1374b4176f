"""Losses: JointLoss (the weighted sum the task trains on) and okc's registered losses.

Importing this package registers ``BCEWithLogitsLoss`` (TorchOk's variant), ``DiceLoss``,
``ContrastiveLoss``, ``NT_XentLoss``, ``TripletMarginLoss`` (torch's, plus in-batch mining) and
the detection losses under TorchOk's mmdet names (``MMFocalLoss``, ``MMIoULoss``, ``MMGIoULoss``,
``MML1Loss``, ``MMCrossEntropyLoss``); every other ``torch.nn`` loss resolves by name.
"""

from okc.losses import bce, contrastive, detection, dice, triplet  # noqa: F401 - registration
from okc.losses.joint import JointLoss, build_joint_loss, check_joint_loss

__all__ = ["JointLoss", "build_joint_loss", "check_joint_loss"]
