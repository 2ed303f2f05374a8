"""The multi-label loss (Multi-Moments in Time, HVU): a sigmoid per class and binary cross-entropy, as mmaction2's
`BCELossWithLogits` computes it: the mean over videos and classes, times `loss_weight`.

The weight is a recipe value (`train --loss-weight`) because it sets the effective learning rate: with plain
SGD the step is lr x loss_weight x the gradient of the mean. The default is the weight of the mmaction2 config
whose figure the README quotes for the split's data set (`dataset_loss_weight`): 160 for MMiT
(`tsn_r101_1x1x5_50e_mmit_rgb.py`, 313 classes), 333 for every HVU category (`tsn_r18_1x1x8_100e_hvu_*_rgb.py`,
69 to 1,678 classes), 1 elsewhere (mmaction2's default). Summing over the classes instead would be a weight
equal to the class count: 1.96x MMiT's, from 0.21x (event) to 5.0x (object) HVU's.
"""

from __future__ import annotations

import torch
from torch import nn

LOSS_WEIGHTS = {"mmit": 160.0, "hvu": 333.0}  # mmaction2's MMiT and HVU TSN configs, loss_cls.loss_weight
DEFAULT_LOSS_WEIGHT = 1.0  # mmaction2 BaseWeightedLoss


def dataset_loss_weight(source: str) -> float:
    """The loss weight of the mmaction2 config behind a data set's quoted figure (1 for data sets without one)."""
    return LOSS_WEIGHTS.get(source, DEFAULT_LOSS_WEIGHT)


def multi_label_loss(scores: torch.Tensor, targets: torch.Tensor, weight: float = DEFAULT_LOSS_WEIGHT) -> torch.Tensor:
    """`weight` x the mean binary cross-entropy of scores [N, C] (logits) against 0/1 targets [N, C]."""
    return weight * nn.functional.binary_cross_entropy_with_logits(scores, targets)


def summed_multi_label_loss(scores: torch.Tensor, targets: torch.Tensor, weight: float = DEFAULT_LOSS_WEIGHT) -> torch.Tensor:
    """The same loss summed over the videos (a validation pass adds batches up, then divides by the videos)."""
    return weight * nn.functional.binary_cross_entropy_with_logits(scores, targets, reduction="sum") / scores.shape[1]
