"""Average precision by hand (scikit-learn is not a dependency): checked against examples worked on paper."""

import numpy as np
import pytest

from tsnpipe.stages.scores.average_precision import (
    average_precision, mean_average_precision, multi_hot, per_class_average_precision,
)


def test_ap_of_a_hand_worked_ranking():
    # ranked: pos, neg, pos, neg, pos -> precision at the positives 1/1, 2/3, 3/5; recall steps of 1/3
    scores = [0.9, 0.8, 0.7, 0.6, 0.5]
    positives = [1, 0, 1, 0, 1]
    assert average_precision(np.array(scores), np.array(positives)) == pytest.approx((1 + 2 / 3 + 3 / 5) / 3)


def test_tied_scores_count_as_one_threshold():
    # 0.9 pos; then a tie at 0.5 holding one pos and one neg: precision there 2/3 for the second positive
    assert average_precision(np.array([0.9, 0.5, 0.5]), np.array([1, 0, 1])) == pytest.approx((1 + 2 / 3) / 2)
    assert average_precision(np.array([0.9, 0.5, 0.5]), np.array([1, 1, 0])) == pytest.approx((1 + 2 / 3) / 2)


def test_perfect_ranking_is_one_and_a_class_without_positives_is_left_out():
    scores = np.array([[0.9, 0.1, 0.3], [0.2, 0.8, 0.4], [0.7, 0.6, 0.1]])
    targets = multi_hot([[0], [1], [0, 1]], 3)
    ap = per_class_average_precision(scores, targets)
    assert ap[0] == 1.0 and ap[1] == 1.0 and np.isnan(ap[2])
    assert mean_average_precision(scores, targets) == 1.0


def test_map_on_random_scores_matches_a_slow_reference():
    rng = np.random.default_rng(0)
    scores = rng.random((40, 5)).round(1)  # rounding makes ties
    targets = (rng.random((40, 5)) < 0.3).astype(np.float32)

    def slow(s, t):  # precision and recall at every distinct threshold, from the definition
        thresholds = sorted(set(s), reverse=True)
        total, ap, last_recall = t.sum(), 0.0, 0.0
        for th in thresholds:
            chosen = s >= th
            tp = (t[chosen] > 0).sum()
            recall = tp / total
            ap += (recall - last_recall) * tp / chosen.sum()
            last_recall = recall
        return ap

    expected = np.mean([slow(scores[:, c], targets[:, c]) for c in range(5)])
    assert mean_average_precision(scores, targets) == pytest.approx(expected)
