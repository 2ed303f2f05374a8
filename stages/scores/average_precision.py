"""Average precision for multi-label scores (Multi-Moments in Time, HVU), computed by hand in numpy.

AP of one ranking: rank by score, highest first; AP = sum over the distinct score thresholds of (recall gain
at that threshold) x (precision at that threshold), items with equal scores taken together: scikit-learn's
`average_precision_score` definition (no interpolation) and mmaction2's `binary_precision_recall_curve`.
Two means of it are in use, and the figures each data set quotes were made with one of them:

- over classes (`MAP_OVER` "classes"): each class ranks the videos; the mean is over the classes with at least
  one positive video (a class with none has no AP, NaN, and is left out). mmaction2's `mean_average_precision`,
  scikit-learn's `average='macro'` on those classes; HVU's configs report it.
- over videos ("videos"): each video ranks the classes; the mean is over the videos. mmaction2's
  `mmit_mean_average_precision`, scikit-learn's `average='samples'`; the Multi-Moments in Time configs report
  it (the data set's own metric). A video without a label has no AP and is left out (scikit-learn counts it 0,
  mmaction2's mean turns NaN; every MMiT video has a label).

On the same scores the two can differ by several points, so a figure is only comparable with the mean it was
made with: `dataset_map_over` names each data set's.
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


def per_video_average_precision(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """AP of every video over its classes: scores [N, C], targets [N, C] (0/1) -> [N], NaN for videos without a label."""
    return per_class_average_precision(np.asarray(scores).T, np.asarray(targets).T)


MAP_OVER = ("classes", "videos")


def dataset_map_over(source: str) -> str:
    """The mean a data set's quoted figures use: "videos" for Multi-Moments in Time (mmaction2's MMiT configs,
    `mmit_mean_average_precision`), "classes" for the others (HVU's configs: `mean_average_precision`)."""
    return "videos" if source == "mmit" else "classes"


def mean_average_precision(scores: np.ndarray, targets: np.ndarray, over: str = "classes") -> float:
    """The mean AP over classes with at least one positive video, or (`over` "videos") over videos with at least
    one label; NaN when there is none."""
    if over not in MAP_OVER:
        raise ValueError(f"over must be one of {MAP_OVER}, not {over!r}")
    ap = (per_video_average_precision if over == "videos" else per_class_average_precision)(scores, targets)
    return float(np.nanmean(ap)) if np.any(~np.isnan(ap)) else float("nan")


def multi_hot(label_lists: list[list[int]], num_classes: int) -> np.ndarray:
    """[N, C] float32 0/1 targets from each video's label list."""
    targets = np.zeros((len(label_lists), num_classes), dtype=np.float32)
    for row, labels in enumerate(label_lists):
        targets[row, list(labels)] = 1.0
    return targets
