"""Average precision for multi-label scores (Multi-Moments in Time, HVU), computed by hand in numpy.

Per class: rank the videos by score, highest first; AP = sum over the distinct score thresholds of
(recall gain at that threshold) x (precision at that threshold), videos with equal scores taken together.
This is scikit-learn's `average_precision_score` definition (no interpolation), which mmaction2's
`mmit_mean_average_precision` also computes. The mean (mAP) is over the classes with at least one
positive video; a class with none has no AP (NaN) and is left out of the mean.
"""

from __future__ import annotations

import numpy as np


def average_precision(scores: np.ndarray, positives: np.ndarray) -> float:
    """AP of one class: scores [N], positives [N] (bool). NaN when there is no positive."""
    scores = np.asarray(scores, dtype=np.float64)
    positives = np.asarray(positives, dtype=bool)
    total = int(positives.sum())
    if total == 0:
        return float("nan")
    order = np.argsort(-scores, kind="stable")
    scores, positives = scores[order], positives[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(scores)), len(scores) - 1]  # end index of each group of equal scores
    hits = np.cumsum(positives)[last_of_tie]
    precision = hits / (last_of_tie + 1)
    recall = hits / total
    gains = np.diff(np.r_[0.0, recall])
    return float(np.sum(gains * precision))


def per_class_average_precision(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """AP of every class: scores [N, C], targets [N, C] (0/1) -> [C], NaN for classes without positives."""
    scores, targets = np.asarray(scores), np.asarray(targets).astype(bool)
    return np.array([average_precision(scores[:, c], targets[:, c]) for c in range(scores.shape[1])])


def mean_average_precision(scores: np.ndarray, targets: np.ndarray) -> float:
    """The mean AP over classes with at least one positive video (NaN when no class has one)."""
    ap = per_class_average_precision(scores, targets)
    return float(np.nanmean(ap)) if np.any(~np.isnan(ap)) else float("nan")


def multi_hot(label_lists: list[list[int]], num_classes: int) -> np.ndarray:
    """[N, C] float32 0/1 targets from each video's label list."""
    targets = np.zeros((len(label_lists), num_classes), dtype=np.float32)
    for row, labels in enumerate(label_lists):
        targets[row, list(labels)] = 1.0
    return targets
