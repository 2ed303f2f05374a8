"""Late fusion: joined by video id, refuses files that disagree, weights parsed and searched honestly."""

import numpy as np
import pytest

from tsnpipe.stages.scores.fuse import FusionError, accuracy_table, fuse_files, parse_weights
from tsnpipe.stages.scores.files import ClassOrderError, accuracies, read_scores, write_scores

CLASSES = [f"Class{c:02d}" for c in range(8)]


def stream_scores(labels, strength, seed):
    """Scores of a stream that knows the label with the given strength, plus noise of its own."""
    rng = np.random.default_rng(seed)
    return rng.normal(size=(len(labels), len(CLASSES))) + strength * np.eye(len(CLASSES))[labels]


def save(path, video_ids, labels, scores, modality, class_names=CLASSES, average="raw", order=None):
    order = np.arange(len(video_ids)) if order is None else order
    return write_scores(
        path,
        [video_ids[i] for i in order],
        np.asarray(labels)[order],
        class_names,
        np.asarray(scores)[order],
        {"modality": modality, "segments": 25, "crops": 10, "average": average},
        {"checkpoint": f"runs/{modality}/best.pt", "split": 1},
    )


def two_streams(first_video=0, count=80):
    video_ids = [f"{CLASSES[i % 8]}/v_{i:04d}" for i in range(first_video, first_video + count)]
    labels = np.arange(first_video, first_video + count) % 8
    rgb = stream_scores(labels, 1.5, seed=first_video + 1)
    flow = stream_scores(labels, 1.5, seed=first_video + 2)
    return video_ids, labels, rgb, flow


def test_fusion_joins_by_video_id_not_by_row(tmp_path):
    video_ids, labels, rgb, flow = two_streams()
    shuffled = np.random.default_rng(9).permutation(len(video_ids))
    save(tmp_path / "rgb.pkl", video_ids, labels, rgb, "rgb")
    save(tmp_path / "flow.pkl", video_ids, labels, flow, "flow")
    save(tmp_path / "flow_shuffled.pkl", video_ids, labels, flow, "flow", order=shuffled)
    in_order = fuse_files([tmp_path / "rgb.pkl", tmp_path / "flow.pkl"], (1.0, 1.5))
    mixed = fuse_files([tmp_path / "rgb.pkl", tmp_path / "flow_shuffled.pkl"], (1.0, 1.5))
    assert mixed.fused["video_ids"] == in_order.fused["video_ids"]
    np.testing.assert_array_equal(mixed.fused["scores"], in_order.fused["scores"])
    assert mixed.rows[-1][1] == in_order.rows[-1][1]
    expected = (rgb + 1.5 * flow)[np.argsort(video_ids)]
    np.testing.assert_allclose(in_order.fused["scores"], expected, rtol=1e-5)


def test_two_complementary_streams_fuse_better_than_either(tmp_path):
    video_ids, labels, rgb, flow = two_streams(count=400)
    save(tmp_path / "rgb.pkl", video_ids, labels, rgb, "rgb")
    save(tmp_path / "flow.pkl", video_ids, labels, flow, "flow")
    result = fuse_files([tmp_path / "rgb.pkl", tmp_path / "flow.pkl"], (1.0, 1.0))
    (_, rgb_acc), (_, flow_acc), (name, fused_acc) = result.rows
    assert name == "fused 1:1"
    assert fused_acc["top1"] > max(rgb_acc["top1"], flow_acc["top1"])
    assert rgb_acc == accuracies(rgb, labels)


def test_fused_file_records_weights_and_inputs(tmp_path):
    video_ids, labels, rgb, flow = two_streams()
    save(tmp_path / "rgb.pkl", video_ids, labels, rgb, "rgb")
    save(tmp_path / "flow.pkl", video_ids, labels, flow, "flow")
    fuse_files([tmp_path / "rgb.pkl", tmp_path / "flow.pkl"], (1.0, 1.5), output=tmp_path / "fused.pkl")
    fused = read_scores(tmp_path / "fused.pkl")
    assert fused["aggregation"]["weights"] == [1.0, 1.5]
    assert fused["aggregation"]["modality"] == "rgb+flow"
    assert fused["aggregation"]["fusion"] == "raw"
    inputs = [i["path"] for i in fused["aggregation"]["inputs"]]
    assert inputs == [str(tmp_path / "rgb.pkl"), str(tmp_path / "flow.pkl")]
    assert fused["video_ids"] == sorted(video_ids)


def test_fused_output_never_overwrites_an_input(tmp_path):
    video_ids, labels, rgb, flow = two_streams()
    save(tmp_path / "rgb.pkl", video_ids, labels, rgb, "rgb")
    save(tmp_path / "flow.pkl", video_ids, labels, flow, "flow")
    before = (tmp_path / "flow.pkl").read_bytes()
    with pytest.raises(FusionError, match="is one of the input score files"):
        fuse_files([tmp_path / "rgb.pkl", tmp_path / "flow.pkl"], (1.0, 1.0), output=tmp_path / "flow.pkl")
    assert (tmp_path / "flow.pkl").read_bytes() == before


def test_softmax_fusion_can_pick_a_different_class_than_raw(tmp_path):
    # Raw: [5, 8.5, 5] picks class 1. Probabilities: rgb is sure of 0, flow split between 1 and 2: class 0 wins.
    rgb = np.array([[5.0, 4.0, 0.0]])
    flow = np.array([[0.0, 4.5, 5.0]])
    names = ["a", "b", "c"]
    save(tmp_path / "rgb.pkl", ["a/v1"], [0], rgb, "rgb", class_names=names)
    save(tmp_path / "flow.pkl", ["a/v1"], [0], flow, "flow", class_names=names)
    paths = [tmp_path / "rgb.pkl", tmp_path / "flow.pkl"]
    raw = fuse_files(paths, (1.0, 1.0))
    soft = fuse_files(paths, (1.0, 1.0), softmax=True)
    assert raw.fused["scores"].argmax() == 1 and raw.rows[-1][1]["top1"] == 0.0
    assert soft.fused["scores"].argmax() == 0 and soft.rows[-1][1]["top1"] == 1.0
    assert soft.fused["scores"].sum() == pytest.approx(1.0)


def test_mismatched_videos_are_refused_naming_them_and_the_counts(tmp_path):
    video_ids, labels, rgb, flow = two_streams()
    save(tmp_path / "rgb.pkl", video_ids, labels, rgb, "rgb")
    save(tmp_path / "flow.pkl", video_ids[:-2], labels[:-2], flow[:-2], "flow")
    with pytest.raises(FusionError) as error:
        fuse_files([tmp_path / "rgb.pkl", tmp_path / "flow.pkl"], (1.0, 1.0))
    message = str(error.value)
    assert "80 and 78 videos" in message and "2 only in" in message
    assert video_ids[-1] in message and video_ids[-2] in message


def test_mismatched_labels_are_refused_naming_the_videos(tmp_path):
    video_ids, labels, rgb, flow = two_streams()
    other_labels = labels.copy()
    other_labels[5] = (labels[5] + 1) % 8
    save(tmp_path / "rgb.pkl", video_ids, labels, rgb, "rgb")
    save(tmp_path / "flow.pkl", video_ids, other_labels, flow, "flow")
    with pytest.raises(FusionError, match=f"labels of 1 videos .*{video_ids[5]}"):
        fuse_files([tmp_path / "rgb.pkl", tmp_path / "flow.pkl"], (1.0, 1.0))


@pytest.mark.parametrize(
    "other_classes, message",
    [
        (CLASSES[:4] + ["kick_ball"] + CLASSES[5:], "1 label differs: label 4 is 'Class04' vs 'kick_ball'"),
        (CLASSES[:3] + [CLASSES[4], CLASSES[3]] + CLASSES[5:], "first label 3 is 'Class03' vs 'Class04'; label 4"),
        (CLASSES + ["Extra"], "8 vs 9 classes, 1 label differs: label 8 is missing vs 'Extra'"),
    ],
)
def test_mismatched_class_lists_are_refused(tmp_path, other_classes, message):
    video_ids, labels, rgb, flow = two_streams()
    save(tmp_path / "rgb.pkl", video_ids, labels, rgb, "rgb")
    flow = np.concatenate([flow, np.zeros((len(flow), len(other_classes) - 8))], axis=1)
    save(tmp_path / "flow.pkl", video_ids, labels, flow, "flow", class_names=other_classes)
    with pytest.raises(ClassOrderError, match=message):
        fuse_files([tmp_path / "rgb.pkl", tmp_path / "flow.pkl"], (1.0, 1.0))


def test_raw_fusion_of_differently_averaged_files_is_refused(tmp_path):
    video_ids, labels, rgb, flow = two_streams()
    save(tmp_path / "rgb.pkl", video_ids, labels, rgb, "rgb")
    save(tmp_path / "flow.pkl", video_ids, labels, flow, "flow", average="softmax")
    paths = [tmp_path / "rgb.pkl", tmp_path / "flow.pkl"]
    with pytest.raises(FusionError, match="--softmax"):
        fuse_files(paths, (1.0, 1.0))
    assert fuse_files(paths, (1.0, 1.0), softmax=True).fused["aggregation"]["fusion"] == "softmax"


@pytest.mark.parametrize(
    "text, weights",
    [("1:1.5", (1.0, 1.5)), ("0.5:0.5:1", (0.5, 0.5, 1.0)), ("1:0", (1.0, 0.0)), ("2", (2.0,)),
     ("1e0:3", (1.0, 3.0))],
)
def test_weights_parse(text, weights):
    assert parse_weights(text) == weights


@pytest.mark.parametrize(
    "text, message",
    [("1:", "not numbers"), ("a:b", "not numbers"), ("1:-1", ">= 0"), ("0:0", "all zero"), ("1:nan", "finite"),
     ("", "not numbers"), ("1;2", "not numbers")],
)
def test_bad_weights_are_refused_with_one_line(text, message):
    with pytest.raises(FusionError, match=message) as error:
        parse_weights(text)
    assert "\n" not in str(error.value)


def test_weight_count_must_match_the_files(tmp_path):
    video_ids, labels, rgb, flow = two_streams()
    save(tmp_path / "rgb.pkl", video_ids, labels, rgb, "rgb")
    save(tmp_path / "flow.pkl", video_ids, labels, flow, "flow")
    with pytest.raises(FusionError, match="3 weights were given for 2 score files"):
        fuse_files([tmp_path / "rgb.pkl", tmp_path / "flow.pkl"], (1.0, 1.0, 1.0))


def write_validation_and_test(tmp_path, flow_strength, rgb_strength=1.5):
    """Test videos 0..199 and validation videos 1000..1199, streams of the given strengths."""
    for prefix, first in (("test", 0), ("val", 1000)):
        video_ids = [f"{CLASSES[i % 8]}/v_{i:04d}" for i in range(first, first + 200)]
        labels = np.arange(first, first + 200) % 8
        rgb = stream_scores(labels, rgb_strength, seed=first + 5)
        flow = stream_scores(labels, flow_strength, seed=first + 7)
        save(tmp_path / f"{prefix}_rgb.pkl", video_ids, labels, rgb, "rgb")
        save(tmp_path / f"{prefix}_flow.pkl", video_ids, labels, flow, "flow")
    test_paths = [tmp_path / "test_rgb.pkl", tmp_path / "test_flow.pkl"]
    return test_paths, [tmp_path / "val_rgb.pkl", tmp_path / "val_flow.pkl"]


def test_weight_search_turns_off_a_stream_that_is_noise_on_validation(tmp_path):
    test_paths, validation_paths = write_validation_and_test(tmp_path, flow_strength=0.0)
    result = fuse_files(test_paths, validation_paths=validation_paths)
    assert result.searched and result.weights == (1.0, 0.0)
    assert result.rows[-1] == ("fused 1:0", result.rows[0][1])
    assert result.fused["aggregation"]["weights_searched_on"] == [str(p) for p in validation_paths]
    equal = fuse_files(test_paths, (1.0, 1.0))
    assert result.rows[-1][1]["mean_class"] > equal.rows[-1][1]["mean_class"]


def test_weight_search_can_leave_out_the_first_stream(tmp_path):
    test_paths, validation_paths = write_validation_and_test(tmp_path, flow_strength=1.5, rgb_strength=0.0)
    result = fuse_files(test_paths, validation_paths=validation_paths)
    assert result.weights == (0.0, 1.0)
    assert result.rows[-1] == ("fused 0:1", result.rows[1][1])


def test_weight_search_refuses_the_test_files_as_validation(tmp_path):
    test_paths, _ = write_validation_and_test(tmp_path, flow_strength=1.0)
    with pytest.raises(FusionError, match="shares 200 of its 200 videos with the test files"):
        fuse_files(test_paths, validation_paths=test_paths)


def test_weight_search_refuses_validation_streams_in_another_order(tmp_path):
    test_paths, validation_paths = write_validation_and_test(tmp_path, flow_strength=1.0)
    with pytest.raises(FusionError, match="holds flow scores but .*test_rgb.pkl holds rgb"):
        fuse_files(test_paths, validation_paths=validation_paths[::-1])


def test_accuracy_table_shows_percentages_for_every_row():
    table = accuracy_table([("rgb.pkl", {"top1": 0.855, "top5": 0.97, "mean_class": 0.85}),
                            ("fused 1:1.5", {"top1": 0.935, "top5": 0.99, "mean_class": 0.93})])
    lines = table.splitlines()
    assert lines[0].split() == ["input", "top-1", "top-5", "mean", "class"]
    assert lines[1].split() == ["rgb.pkl", "85.50", "97.00", "85.00"]
    assert lines[2].split() == ["fused", "1:1.5", "93.50", "99.00", "93.00"]
