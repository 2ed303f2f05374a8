"""`tsnpipe fuse` and `tsnpipe report` as a user runs them."""

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import run_tsnpipe
from tsnpipe.cli import main
from tsnpipe.stages.scores.files import read_scores, write_scores

CLASSES = [f"Class{c}" for c in range(5)]


def write_stream(path, first_video, strength, seed, modality, count=100):
    labels = np.arange(count) % len(CLASSES)
    rng = np.random.default_rng(seed)
    scores = rng.normal(size=(count, len(CLASSES))) + strength * np.eye(len(CLASSES))[labels]
    order = rng.permutation(count)  # every file in its own row order
    video_ids = [f"{CLASSES[label]}/v_{first_video + i:04d}" for i, label in enumerate(labels)]
    write_scores(path, [video_ids[i] for i in order], labels[order], CLASSES, scores[order],
                 {"modality": modality, "average": "raw"}, {"split": 1})
    return path


@pytest.fixture()
def streams(tmp_path):
    return {
        "rgb": write_stream(tmp_path / "rgb.pkl", 0, 1.0, 1, "rgb"),
        "flow": write_stream(tmp_path / "flow.pkl", 0, 1.0, 2, "flow"),
        "val_rgb": write_stream(tmp_path / "val_rgb.pkl", 1000, 1.5, 3, "rgb"),
        "val_flow": write_stream(tmp_path / "val_flow.pkl", 1000, 0.0, 4, "flow"),
    }


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_fuse_prints_a_row_per_input_and_the_fusion_and_writes_the_fused_file(streams, tmp_path):
    result = invoke("fuse", streams["rgb"], streams["flow"], "--weights", "1:1.5", "--out", tmp_path / "fused.pkl")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "2 score files, 100 videos, 5 classes; raw scores; weights 1:1.5 (given)" in lines[0]
    assert lines[1].split() == ["input", "top-1", "top-5", "mean", "class"]
    assert lines[2].startswith(str(streams["rgb"])) and lines[3].startswith(str(streams["flow"]))
    assert lines[4].startswith("fused 1:1.5")
    assert read_scores(tmp_path / "fused.pkl")["aggregation"]["weights"] == [1.0, 1.5]


@pytest.mark.parametrize(
    "weights, exit_code, message",
    [("1:", 2, "not numbers"), ("a:b", 2, "not numbers"), ("1:-2", 2, ">= 0"),
     ("1:1:1", 1, "3 weights were given for 2")],
)
def test_fuse_refuses_bad_weights_with_one_line(streams, weights, exit_code, message):
    result = invoke("fuse", streams["rgb"], streams["flow"], "--weights", weights)
    assert result.exit_code == exit_code
    assert message in result.output
    assert "Traceback" not in result.output


def test_fuse_searches_weights_on_validation_files_given_in_a_row(streams):
    result = invoke("fuse", streams["rgb"], streams["flow"], "--search-weights", streams["val_rgb"],
                    streams["val_flow"])
    assert result.exit_code == 0, result.output
    assert "weights 1:0 (searched on" in result.output  # flow is noise on validation


def test_fuse_refuses_the_test_files_as_validation(streams):
    result = invoke("fuse", streams["rgb"], streams["flow"], "--search-weights", streams["rgb"], streams["flow"])
    assert result.exit_code == 1
    assert "shares 100 of its 100 videos with the test files" in result.output


def test_search_weights_without_files_is_a_usage_error(streams):
    result = invoke("fuse", streams["rgb"], streams["flow"], "--search-weights", "--softmax")
    assert result.exit_code == 2 and "needs the validation score files" in result.output


def test_fuse_refuses_files_of_different_videos(streams):
    result = invoke("fuse", streams["rgb"], streams["val_flow"])
    assert result.exit_code == 1
    assert "do not score the same videos (100 and 100 videos; 100 only in" in result.output


def test_report_writes_png_and_csv(streams, tmp_path):
    result = invoke("report", streams["rgb"], "--out", tmp_path / "report")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "report" / "rgb_confusion.png").stat().st_size > 10_000
    assert (tmp_path / "report" / "rgb_per_class.csv").read_text().count("\n") == 6
    assert "100 videos, 5 classes; top-1" in result.output


def test_fuse_runs_as_a_real_command(streams, tmp_path):
    proc = run_tsnpipe("fuse", str(streams["rgb"]), str(streams["flow"]), "--weights", "1:1.5", "--softmax",
                       "--out", str(tmp_path / "fused.pkl"))
    assert proc.returncode == 0, proc.stderr
    assert "probabilities (softmax)" in proc.stdout and "fused 1:1.5" in proc.stdout
    assert read_scores(tmp_path / "fused.pkl")["aggregation"]["fusion"] == "softmax"


def test_a_malicious_score_file_is_refused_by_the_real_command(streams, tmp_path):
    (tmp_path / "evil.pkl").write_bytes(
        b"cos\nsystem\n(S'touch " + str(tmp_path / "marker").encode() + b"'\ntR.")
    proc = run_tsnpipe("report", str(tmp_path / "evil.pkl"))
    assert proc.returncode == 1
    assert "refers to the Python global os.system" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "marker").exists()
