"""`tsnpipe predict`: a tiny TSN trained on the sample clips classifies a shipped clip, alone and fused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from conftest import SAMPLES, TEST_DATA, run_tsnpipe
from tsnpipe.cli import main
from tsnpipe.cmd_predict import frames_for
from tsnpipe.stages.frames import FrameParams
from tsnpipe.stages.train.recipe import TrainParams
from train_workdir import SHORT_SIDE, build_sample_workdir

CLIP = SAMPLES / "wave" / "TrumanShow_wave_f_nm_np1_fr_med_26.avi"  # 1.7 s: 17 frames, 16 flow pairs
TINY = ["--backbone", "resnet18", "--pretrained", "none", "--segments", "2", "--size", "32", "--batch", "4",
        "--workers", "0", "--no-progress", "--no-channels-last", "--epochs", "1"]
# The sample workdir is decoded without the runner, so no frames.run.json says its size: give it.
FAST = ["--size", str(SHORT_SIDE), "--segments", "3", "--crops", "1", "--device", "cpu"]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    workdir = build_sample_workdir(tmp_path_factory.getbasetemp() / "train_samples")
    runner = CliRunner()
    found = {}
    for modality in ("rgb", "flow"):
        run = workdir / "runs" / f"predict_{modality}"
        if not (run / "last.pt").is_file():
            result = runner.invoke(main, ["train", "-w", str(workdir), "--modality", modality,
                                          "--run-name", run.name, *TINY])
            assert result.exit_code == 0, result.output
        found[modality] = run / "last.pt"
    return found


def predict_json(*args: str) -> dict:
    result = CliRunner().invoke(main, ["predict", str(CLIP), *args, *FAST, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_predict_prints_the_top_classes_as_a_table(checkpoints):
    result = CliRunner().invoke(main, ["predict", str(CLIP), "--checkpoint", str(checkpoints["rgb"]), *FAST])
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    header = next(i for i, line in enumerate(lines) if line.split() == ["rank", "class", "score"])
    rows = [line.split() for line in lines[header + 1:]]
    classes = 4  # the sample clips' classes: ApplyEyeMakeup, SoccerJuggling, cartwheel, wave
    assert [row[0] for row in rows] == [str(rank) for rank in range(1, min(5, classes) + 1)]
    assert sorted(row[1] for row in rows) == ["ApplyEyeMakeup", "SoccerJuggling", "cartwheel", "wave"]
    assert "frames at 10 fps, short side 64" in result.stdout and "overridden by --fps/--size" in result.stdout


def test_json_lists_classes_best_first(checkpoints):
    out = predict_json("--checkpoint", str(checkpoints["rgb"]), "--top", "3")
    assert set(out) == {"video", "classes", "checkpoints", "weights"}
    scores = [row["score"] for row in out["classes"]]
    assert len(scores) == 3 and scores == sorted(scores, reverse=True)
    assert out["video"] == str(CLIP) and out["checkpoints"] == [str(checkpoints["rgb"])] and out["weights"] == [1.0]


def test_fused_scores_are_the_weighted_sum_of_each_checkpoint_alone(checkpoints):
    rgb = predict_json("--checkpoint", str(checkpoints["rgb"]), "--top", "4")
    flow = predict_json("--checkpoint", str(checkpoints["flow"]), "--top", "4")
    fused = predict_json("--checkpoint", str(checkpoints["rgb"]), "--checkpoint", str(checkpoints["flow"]),
                         "--weights", "1:1.5", "--top", "4")
    alone = {name: {row["class"]: row["score"] for row in out["classes"]} for name, out in (("rgb", rgb), ("flow", flow))}
    expected = {name: alone["rgb"][name] + 1.5 * alone["flow"][name] for name in alone["rgb"]}
    assert [row["class"] for row in fused["classes"]] == sorted(expected, key=expected.get, reverse=True)
    for row in fused["classes"]:
        assert row["score"] == pytest.approx(expected[row["class"]], rel=1e-5, abs=1e-5)
    assert fused["weights"] == [1.0, 1.5]


def test_checkpoints_with_other_class_lists_are_refused(checkpoints, tmp_path):
    state = torch.load(checkpoints["flow"], weights_only=True)
    state["class_names"] = list(reversed(state["class_names"]))
    other = tmp_path / "other.pt"
    torch.save(state, other)
    result = CliRunner().invoke(main, ["predict", str(CLIP), "--checkpoint", str(checkpoints["rgb"]),
                                       "--checkpoint", str(other), *FAST])
    assert result.exit_code == 1 and "Traceback" not in result.output
    trained, reversed_ = state["class_names"][-1], state["class_names"][0]  # label 0 of each checkpoint
    assert "do not list the same classes in the same order" in result.output
    assert f"first label 0 is {trained!r} vs {reversed_!r}" in result.output


@pytest.mark.parametrize("args, code, message", [
    (["--weights", "1:1.5"], 1, "2 weights were given for 1 checkpoints"),
    (["--weights", "1:x"], 2, "not numbers separated by ':'"),
    (["--weights", "0"], 2, "all zero"),
])
def test_bad_weights_are_one_line_errors(checkpoints, args, code, message):
    result = CliRunner().invoke(main, ["predict", str(CLIP), "--checkpoint", str(checkpoints["rgb"]), *args, *FAST])
    assert result.exit_code == code and message in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("make, message", [
    (lambda folder: folder / "missing.avi", "There is no video file"),
    (lambda folder: _write(folder / "notes.avi", b"not a video at all\n" * 50), "Invalid data found when processing input"),
])
def test_missing_or_undecodable_video_is_a_one_line_error(checkpoints, tmp_path, make, message):
    video = make(tmp_path)
    result = CliRunner().invoke(main, ["predict", str(video), "--checkpoint", str(checkpoints["rgb"]), *FAST])
    assert result.exit_code == 1 and message in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()[-1]) < 400


def test_a_video_with_decode_errors_is_refused_with_the_option_that_keeps_it_which_works(checkpoints):
    video, args = TEST_DATA / "videos" / "corrupted.mp4", ["--checkpoint", str(checkpoints["rgb"]), *FAST]
    refused = CliRunner().invoke(main, ["predict", str(video), *args, "--on-decode-error", "fail"])
    assert refused.exit_code == 1 and "decode errors" in refused.output and "Traceback" not in refused.output
    hint = refused.output.strip().splitlines()[-1]
    assert "--on-decode-error keep" in hint, hint
    kept = CliRunner().invoke(main, ["predict", str(video), *args, "--on-decode-error", "keep"])
    assert kept.exit_code == 0, kept.output


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("recorded, fps, size, expected, origin", [
    (None, None, None, FrameParams(fps=10.0, short_side=256, on_decode_error="keep"), "defaults"),
    ({"fps": 5.0, "short_side": 128, "size": None}, None, None,
     FrameParams(fps=5.0, short_side=128, on_decode_error="keep"), "frames.run.json"),
    ({"fps": 10.0, "short_side": None, "size": [340, 256]}, None, None,
     FrameParams(fps=10.0, short_side=None, size=(340, 256), on_decode_error="keep"), "frames.run.json"),
    ({"fps": 5.0, "short_side": 128, "size": None}, 25.0, ("short", 64),
     FrameParams(fps=25.0, short_side=64, on_decode_error="keep"), "overridden"),
    ({"fps": 10.0, "short_side": 256, "size": None, "on_decode_error": "fail"}, None, None,
     FrameParams(fps=10.0, short_side=256, on_decode_error="fail"), "frames.run.json"),
])
def test_frames_are_decoded_as_the_training_frames_were(tmp_path, recorded, fps, size, expected, origin):
    workdir = tmp_path / "W"
    (workdir / "manifests").mkdir(parents=True)
    if recorded is not None:
        (workdir / "manifests" / "frames.run.json").write_text(json.dumps({"params": recorded}))
    params = TrainParams(split_dir=str(workdir / "splits" / "ucf101" / "split1"), store=str(workdir / "stores" / "x.lmdb"))
    frames, note = frames_for(params, fps, size)
    assert frames == expected and origin in note


@pytest.mark.slow
def test_predict_runs_as_a_real_process(checkpoints):
    done = run_tsnpipe("predict", str(CLIP), "--checkpoint", str(checkpoints["rgb"]), "--checkpoint",
                       str(checkpoints["flow"]), "--weights", "1:1.5", *FAST, "--json", timeout=300)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert len(out["classes"]) == 4 and out["weights"] == [1.0, 1.5]
    assert "flow: TV-L1 opencv on cpu" in done.stderr
