"""Average precision by hand (scikit-learn is a test-only dependency): checked against examples worked on paper
and against scikit-learn."""

import numpy as np
import pytest

from tsnpipe.stages.scores.average_precision import (
    average_precision, dataset_map_over, mean_average_precision, multi_hot, per_class_average_precision,
    per_video_average_precision,
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


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_map_over_videos_equals_scikit_learns_samples_average_with_ties(seed):
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(seed)
    scores = rng.random((60, 12)).round(1)  # rounding makes ties
    targets = (rng.random((60, 12)) < 0.25).astype(np.float32)
    targets[np.arange(60), rng.integers(0, 12, 60)] = 1  # every video has a label, as in MMiT
    expected = metrics.average_precision_score(targets, scores, average="samples")
    assert mean_average_precision(scores, targets, over="videos") == pytest.approx(expected, abs=1e-12)
    assert mean_average_precision(scores, targets, over="classes") == pytest.approx(
        metrics.average_precision_score(targets, scores, average="macro"), abs=1e-12)
    assert abs(expected - mean_average_precision(scores, targets)) > 1e-3  # the two means are not the same figure


def test_a_video_without_a_label_is_left_out_of_the_mean_over_videos():
    scores = np.array([[0.9, 0.1, 0.5], [0.2, 0.8, 0.4], [0.3, 0.6, 0.1]])
    targets = multi_hot([[0], [2], []], 3)
    assert per_video_average_precision(scores, targets)[:2] == pytest.approx([1.0, 0.5])
    assert np.isnan(per_video_average_precision(scores, targets)[2])
    assert mean_average_precision(scores, targets, over="videos") == pytest.approx(0.75)


def test_each_data_set_is_scored_with_the_mean_its_figures_use():
    assert dataset_map_over("mmit") == "videos"
    assert dataset_map_over("hvu") == "classes"
