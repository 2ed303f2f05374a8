"""Reports: confusion-matrix PNG, per-class CSV equal to a direct count, and training curves."""

import matplotlib.image
import numpy as np
import pandas as pd
import pytest

from tsnpipe.stages.errors import TsnpipeError
from tsnpipe.stages.scores.report import confusion_figure, confusion_matrix, plot_curves, write_report
from tsnpipe.stages.scores.files import write_scores
from tsnpipe.stages.train.logs import write_metrics


def write_unbalanced_scores(path, num_classes=6, seed=0):
    """Classes with 1 to num_classes videos each (class 0 has none), and noisy scores."""
    rng = np.random.default_rng(seed)
    labels = np.concatenate([np.full(c, c) for c in range(num_classes)])
    scores = rng.normal(size=(len(labels), num_classes)) + 1.2 * np.eye(num_classes)[labels]
    video_ids = [f"C{label}/v_{i:03d}" for i, label in enumerate(labels)]
    write_scores(path, video_ids, labels, [f"C{c}" for c in range(num_classes)], scores,
                 {"modality": "flow", "average": "raw"}, {"split": 1})
    return labels, scores.astype(np.float32)


def test_report_writes_a_png_and_a_per_class_csv_equal_to_a_direct_count(tmp_path):
    labels, scores = write_unbalanced_scores(tmp_path / "flow.pkl")
    report = write_report(tmp_path / "flow.pkl", tmp_path / "report")
    assert report.confusion_png == tmp_path / "report" / "flow_confusion.png"
    image = matplotlib.image.imread(report.confusion_png)
    assert image.shape[0] >= 500 and image.shape[1] >= 500
    table = pd.read_csv(report.per_class_csv)
    predicted = scores.argmax(1)
    for c in range(6):
        row = table.iloc[c]
        mine = labels == c
        assert row["class_name"] == f"C{c}"
        assert row["videos"] == mine.sum()
        assert row["correct"] == np.sum(predicted[mine] == c)
        if mine.any():
            assert row["accuracy"] == pytest.approx(np.mean(predicted[mine] == c))
        else:
            assert np.isnan(row["accuracy"])
    assert report.accuracies["mean_class"] == pytest.approx(table["accuracy"].mean())  # pandas skips NaN


def test_report_goes_next_to_the_scores_by_default(tmp_path):
    write_unbalanced_scores(tmp_path / "rgb.pkl")
    report = write_report(tmp_path / "rgb.pkl")
    assert {p.name for p in tmp_path.iterdir()} == {"rgb.pkl", "rgb_confusion.png", "rgb_per_class.csv"}
    assert report.videos == 15 and report.classes == 6


def test_per_class_csv_names_the_most_confused_class(tmp_path):
    # Class 1's two videos are both predicted as class 2.
    scores = np.array([[5, 0, 0], [0, 1, 5], [0, 2, 9], [0, 0, 4]], dtype=np.float32)
    write_scores(tmp_path / "s.pkl", ["a/1", "b/1", "b/2", "c/1"], [0, 1, 1, 2], ["a", "b", "c"], scores,
                 {"modality": "rgb"}, {})
    table = pd.read_csv(write_report(tmp_path / "s.pkl").per_class_csv)
    assert table.loc[1, "most_confused_with"] == "c" and table.loc[1, "confused_videos"] == 2
    assert table.loc[1, "accuracy"] == 0.0


def test_few_classes_show_names_and_counts_many_classes_show_neither():
    rng = np.random.default_rng(1)
    few_labels = rng.integers(0, 8, 40)
    few = confusion_matrix(rng.normal(size=(40, 8)), few_labels)
    axes = confusion_figure(few, [f"Class{c}" for c in range(8)]).axes[0]
    assert len(axes.texts) == np.count_nonzero(few)
    assert [t.get_text() for t in axes.get_xticklabels()] == [f"Class{c}" for c in range(8)]

    many_labels = rng.integers(0, 101, 500)
    many = confusion_matrix(rng.normal(size=(500, 101)), many_labels)
    axes = confusion_figure(many, [f"Class{c}" for c in range(101)]).axes[0]
    assert len(axes.texts) == 0
    assert [t.get_text() for t in axes.get_xticklabels()][:3] == ["0", "10", "20"]


def test_confusion_matrix_counts_true_against_predicted():
    scores = np.array([[1, 0], [1, 0], [0, 1]])
    np.testing.assert_array_equal(confusion_matrix(scores, np.array([0, 1, 1])), [[1, 0], [1, 1]])


def test_training_curves_are_drawn_from_metrics_csv(tmp_path):
    csv = tmp_path / "run" / "metrics.csv"
    csv.parent.mkdir()
    csv.write_text("epoch,train_loss,train_acc,val_mean_class_acc\n1,2.3,0.1,\n2,1.7,0.4,0.35\n3,1.2,0.6,\n"
                   "4,0.9,0.7,0.55\n")
    plot_curves(csv, tmp_path / "curves.png")
    assert matplotlib.image.imread(tmp_path / "curves.png").shape[1] == 1000


def test_training_curves_read_the_metrics_csv_that_training_writes(tmp_path):
    rows = [{"epoch": e, "lr": 0.001, "train_loss": 2.0 / e, "train_top1": 0.2 * e, "val_loss": 2.2 / e,
             "val_top1": 0.15 * e, "val_mean_class": 0.14 * e, "clips_per_s": 10.0, "seconds": 5.0}
            for e in (1, 2, 3)]
    write_metrics(tmp_path / "metrics.csv", rows)
    plot_curves(tmp_path / "metrics.csv", tmp_path / "curves.png")
    assert matplotlib.image.imread(tmp_path / "curves.png").shape[1] == 1000


def test_metrics_without_the_expected_columns_are_refused(tmp_path):
    csv = tmp_path / "metrics.csv"
    csv.write_text("epoch,loss\n1,2.0\n")
    with pytest.raises(TsnpipeError, match="lacks the columns train_loss, train_acc or train_top1, "
                                           "val_mean_class_acc or val_mean_class"):
        plot_curves(csv, tmp_path / "curves.png")
    assert not (tmp_path / "curves.png").exists()
