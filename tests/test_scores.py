"""Score files: round trip, refusal of unsafe or malformed files, and the accuracy figures."""

import os
import pickle

import numpy as np
import pytest

from tsnpipe.stages.scores.files import (
    ScoreFileError,
    accuracies,
    per_class_accuracy,
    read_scores,
    write_scores,
)

AGGREGATION = {"modality": "rgb", "segments": 25, "crops": 10, "average": "raw"}


def make_content(count=6, classes=4, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "format": "tsnpipe-scores",
        "version": 1,
        "video_ids": [f"C{i % classes}/v_{i:03d}" for i in range(count)],
        "labels": np.arange(count, dtype=np.int64) % classes,
        "class_names": [f"C{c}" for c in range(classes)],
        "scores": rng.normal(size=(count, classes)).astype(np.float32),
        "aggregation": dict(AGGREGATION),
        "source": {"checkpoint": "runs/rgb/best.pt", "split": 1},
    }


def test_written_file_reads_back_equal(tmp_path):
    content = make_content()
    path = write_scores(tmp_path / "rgb.pkl", **{k: content[k] for k in (
        "video_ids", "labels", "class_names", "scores", "aggregation", "source")})
    loaded = read_scores(path)
    assert loaded["video_ids"] == content["video_ids"]
    assert loaded["class_names"] == content["class_names"]
    np.testing.assert_array_equal(loaded["scores"], content["scores"])
    np.testing.assert_array_equal(loaded["labels"], content["labels"])
    assert loaded["scores"].dtype == np.float32 and loaded["labels"].dtype == np.int64
    assert loaded["aggregation"] == AGGREGATION
    assert [p.name for p in tmp_path.iterdir()] == ["rgb.pkl"]  # no temp file left behind


@pytest.mark.parametrize("protocol", [3, 4, 5])
def test_files_pickled_with_any_modern_protocol_load(tmp_path, protocol):
    path = tmp_path / "scores.pkl"
    content = make_content()
    content["aggregation"]["mean_frames"] = np.float32(3.5)  # a numpy scalar, as careless writers leave
    path.write_bytes(pickle.dumps(content, protocol=protocol))
    assert read_scores(path)["aggregation"]["mean_frames"] == 3.5


class RunsShell:
    def __reduce__(self):
        return (os.system, ("touch marker",))


class RunsEval:
    def __reduce__(self):
        return (eval, ("open('marker', 'w').close()",))


@pytest.mark.parametrize("payload, forbidden", [(RunsShell(), "system"), (RunsEval(), "builtins.eval")])
def test_pickle_carrying_code_is_refused_without_running_it(tmp_path, monkeypatch, payload, forbidden):
    monkeypatch.chdir(tmp_path)
    content = make_content()
    content["source"]["note"] = payload
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps(content))
    with pytest.raises(ScoreFileError, match=forbidden) as error:
        read_scores(path)
    assert str(path) in str(error.value)
    assert not (tmp_path / "marker").exists()


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda c: c.pop("labels"), "keys labels are missing"),
        (lambda c: c.update(format="mmaction-scores"), "format"),
        (lambda c: c.update(scores=c["scores"][:, :3]), "shape"),
        (lambda c: c.update(scores=c["scores"].astype(np.int32)), "2-D float"),
        (lambda c: c.update(labels=c["labels"] + 10), "outside"),
        (lambda c: c.update(video_ids=["same"] * 6), "repeat"),
        (lambda c: c["scores"].__setitem__((0, 0), np.nan), "NaN"),
    ],
)
def test_malformed_score_file_is_refused_with_one_line(tmp_path, change, message):
    content = make_content()
    change(content)
    path = tmp_path / "bad.pkl"
    path.write_bytes(pickle.dumps(content))
    with pytest.raises(ScoreFileError, match=message) as error:
        read_scores(path)
    assert "\n" not in str(error.value) and str(path) in str(error.value)


def test_a_list_instead_of_a_score_dict_is_refused(tmp_path):
    path = tmp_path / "list.pkl"
    path.write_bytes(pickle.dumps([np.zeros((3, 4))]))
    with pytest.raises(ScoreFileError, match="not a dict"):
        read_scores(path)


def test_truncated_file_is_refused(tmp_path):
    path = tmp_path / "cut.pkl"
    path.write_bytes(pickle.dumps(make_content())[:100])
    with pytest.raises(ScoreFileError, match="not a readable score file"):
        read_scores(path)


def test_writing_what_could_not_be_read_is_refused(tmp_path):
    content = make_content()
    with pytest.raises(ScoreFileError, match="pathlib"):
        write_scores(tmp_path / "x.pkl", content["video_ids"], content["labels"], content["class_names"],
                     content["scores"], AGGREGATION, {"checkpoint": tmp_path / "best.pt"})
    assert not list(tmp_path.iterdir())


# Hand-made cases: scores, labels, expected top1, top5, mean class accuracy.
ACCURACY_CASES = [
    # Unbalanced: class 0 has 3 videos (all right), class 1 has 1 video (wrong): top1 3/4, mean class 1/2.
    ([[2, 1], [3, 0], [5, 1], [4, 1]], [0, 0, 0, 1], 0.75, 1.0, 0.5),
    # Six classes: the second video's label is 6th by score, so it misses top-5; class recalls 0 and 1/2.
    ([[6, 5, 4, 3, 2, 1], [6, 5, 4, 3, 2, 1], [1, 2, 3, 4, 5, 6]], [1, 5, 5], 1 / 3, 2 / 3, 0.25),
    # A class without any test video (class 2) does not count in the mean.
    ([[1, 0, 0], [0, 1, 0], [1, 0, 0]], [0, 1, 1], 2 / 3, 1.0, 0.75),
]


@pytest.mark.parametrize("scores, labels, top1, top5, mean_class", ACCURACY_CASES)
def test_accuracies_match_hand_computed_values(scores, labels, top1, top5, mean_class):
    result = accuracies(np.array(scores, dtype=np.float32), np.array(labels))
    assert result == pytest.approx({"top1": top1, "top5": top5, "mean_class": mean_class})


def test_accuracies_match_a_direct_numpy_computation():
    rng = np.random.default_rng(3)
    labels = rng.choice(7, size=200, p=[0.4, 0.2, 0.1, 0.1, 0.1, 0.05, 0.05])
    scores = rng.normal(size=(200, 7)) + 1.5 * np.eye(7)[labels]
    predicted = scores.argmax(1)
    recall = [np.mean(predicted[labels == c] == c) for c in range(7)]
    top5 = np.mean([label in np.argsort(-row)[:5] for row, label in zip(scores, labels)])
    result = accuracies(scores, labels)
    assert result["top1"] == pytest.approx(np.mean(predicted == labels))
    assert result["mean_class"] == pytest.approx(np.mean(recall))
    assert result["top5"] == pytest.approx(top5)
    np.testing.assert_allclose(per_class_accuracy(scores, labels), recall)
