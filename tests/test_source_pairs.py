"""`extract-flow --pairs source`: each extracted frame paired with the next frame of the video at its own rate."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import SAMPLES
from tsnpipe.cli import main
from tsnpipe.manifests.table import Manifest
from tsnpipe.runner import run_info_path
from tsnpipe.stages.flow import FlowParams
from tsnpipe.stages.flow.images import dequantize, read_grey
from tsnpipe.stages.flow.source_pairs import (SOURCE_PATTERN, decode_source_frames, source_pair_indices,
                                              shown_source_frames)
from tsnpipe.stages.frames import FrameParams, extract_video

EYE = "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01"  # 25 fps, first frame at 0.04 s
JUGGLE = "SoccerJuggling/v_SoccerJuggling_g23_c01"  # 29.97 fps, first frame at 0
WAVE = "wave/TrumanShow_wave_f_nm_np1_fr_med_26"  # 30 fps, first frame at 0.0667 s


@pytest.mark.parametrize("times, count, fps, shown", [
    ([0.0, 0.04, 0.08, 0.12, 0.16, 0.2, 0.24], 3, 10, [0, 2, 5]),  # 25 fps from 0: the tick 0.2 s is reached exactly
    ([0.04 * (j + 1) for j in range(12)], 4, 10, [1, 1, 4, 6]),  # from 0.04 s: tick 0 repeats tick 1's frame
    ([0.0666667 + j / 30 for j in range(12)], 4, 10, [1, 1, 4, 7]),  # 30 fps from 2/30 s, 6-decimal timestamps
    ([0.0, 0.5, 1.0], 4, 10, [0, 0, 0, 0]),  # slower source than the sampling rate: frames repeat
])
def test_shown_source_frame_follows_ffmpegs_fps_filter(times, count, fps, shown):
    assert shown_source_frames(times, count, fps) == shown


def test_pairs_end_at_the_last_source_frame_with_the_motion_into_it():
    times = [0.0, 0.5, 1.0]  # 2 fps source sampled at 10 fps: 11 frames, the last 1 s ones show frame 2
    assert source_pair_indices(times, 11, 10)[:6] == [(0, 1)] * 5 + [(1, 2)]
    assert source_pair_indices(times, 11, 10)[-1] == (1, 2)
    assert len(source_pair_indices(times, 11, 10)) == 10


@pytest.mark.parametrize("clip", [EYE, JUGGLE, WAVE])
def test_first_image_of_each_pair_is_the_extracted_frame_byte_for_byte(clip, tmp_path):
    params = FrameParams(short_side=64)
    count = extract_video(SAMPLES / f"{clip}.avi", tmp_path / "frames", params)["frames"]
    (tmp_path / "source").mkdir()
    times = decode_source_frames(SAMPLES / f"{clip}.avi", tmp_path / "source", params)
    pairs = source_pair_indices(times, count, params.fps)
    assert len(pairs) == count - 1
    for k, (first, second) in enumerate(pairs):
        extracted = (tmp_path / "frames" / f"img_{k + 1:05d}.jpg").read_bytes()
        assert (tmp_path / "source" / (SOURCE_PATTERN % (first + 1))).read_bytes() == extracted, k
        assert second == first + 1 and 0.03 < times[second] - times[first] < 0.045  # one source frame apart


@pytest.fixture(scope="module")
def flows(tmp_path_factory):
    """Two real clips at 10 fps and 48x36, with flow of both pairings (OpenCV TV-L1) in separate workdirs."""
    root = tmp_path_factory.mktemp("pairs")
    for clip in (EYE, WAVE):
        (root / "videos" / clip).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(SAMPLES / f"{clip}.avi", root / "videos" / f"{clip}.avi")
    frames = CliRunner().invoke(main, ["extract-frames", str(root / "videos"), "-w", str(root / "extracted"),
                                       "--size", "48x36", "-j", "1", "--no-progress"])
    assert frames.exit_code == 0, frames.output
    out = {}
    for pairs in ("frames", "source"):
        workdir = shutil.copytree(root / "extracted", root / pairs)
        result = CliRunner().invoke(main, ["extract-flow", "-w", str(workdir), "--pairs", pairs, "--backend",
                                           "opencv", "-j", "2", "--no-progress"])
        assert result.exit_code == 0, result.output
        out[pairs] = workdir
    return out


def large_motion(workdir, clip, pairs):
    """The 99th percentile of |flow| over the video's pairs, in pixels (grey level 128 is no motion)."""
    flow = [dequantize(read_grey(workdir / "flow" / clip / f"flow_{axis}_{k:05d}.jpg"), 20.0)
            for k in range(1, pairs + 1) for axis in "xy"]
    return float(np.percentile(np.abs(np.array(flow) - dequantize(np.uint8(128), 20.0)), 99))


def test_source_pairs_have_as_many_pairs_and_less_motion(flows):
    frames_rows, source_rows = Manifest(flows["frames"], "flow").rows, Manifest(flows["source"], "flow").rows
    for clip in (EYE, WAVE):
        assert source_rows[clip]["pairs"] == frames_rows[clip]["pairs"] > 0
        assert source_rows[clip]["pairs_of"] == "source" and frames_rows[clip]["pairs_of"] == "frames"
        pairs = source_rows[clip]["pairs"]
        # 1/25 or 1/30 s apart instead of 1/10 s: clearly less motion per pair
        assert large_motion(flows["source"], clip, pairs) < 0.7 * large_motion(flows["frames"], clip, pairs)


def test_pairing_is_recorded_and_changing_it_recomputes_every_video(flows, tmp_path):
    recorded = json.loads(run_info_path(flows["source"], "flow").read_text())["params"]
    assert recorded["pairs"] == "source"
    assert "pairs" not in FlowParams().hashed()  # flow from before the option keeps its hash
    workdir = shutil.copytree(flows["source"], tmp_path / "w")
    again = CliRunner().invoke(main, ["extract-flow", "-w", str(workdir), "--pairs", "source", "--backend", "opencv",
                                      "-j", "1", "--no-progress"])
    assert "0 computed, 2 up to date" in again.output
    back = CliRunner().invoke(main, ["extract-flow", "-w", str(workdir), "--pairs", "frames", "--backend", "opencv",
                                     "-j", "2", "--no-progress"])
    assert back.exit_code == 0 and "2 computed, 0 up to date" in back.output and "params changed" in back.output


def test_source_pairs_without_the_video_fail_that_video_with_the_fix(flows, tmp_path):
    workdir = shutil.copytree(flows["frames"], tmp_path / "w")
    moved = tmp_path / "moved"
    shutil.move(flows["frames"].parent / "videos", moved)
    try:
        result = CliRunner().invoke(main, ["extract-flow", "-w", str(workdir), "--pairs", "source", "--backend",
                                           "opencv", "-j", "1", "--no-progress"])
    finally:
        shutil.move(moved, flows["frames"].parent / "videos")
    assert result.exit_code == 1 and "2 failed" in result.output
    error = Manifest(workdir, "flow").rows[EYE]["error"]
    assert "that" in error and "was extracted from is gone" in error and "put it back" in error


def test_flow_checkpoint_carries_the_pairing_into_scores_and_predict(tmp_path, tmp_path_factory):
    """Training records how its workdir's flow was paired; test writes it into the score file and predict
    computes the new video's flow the same way."""
    import torch

    from tsnpipe.stages.scores.files import read_scores
    from train_workdir import SHORT_SIDE, build_sample_workdir

    samples = build_sample_workdir(tmp_path_factory.getbasetemp() / "train_samples")
    workdir = shutil.copytree(samples, tmp_path / "w", ignore=shutil.ignore_patterns("runs"))
    run_info_path(workdir, "flow").parent.mkdir(parents=True, exist_ok=True)
    run_info_path(workdir, "flow").write_text(json.dumps({"params": FlowParams(pairs="source").hashed()}))
    runner = CliRunner()
    trained = runner.invoke(main, ["train", "-w", str(workdir), "--modality", "flow", "--run-name", "src",
                                   "--backbone", "resnet18", "--pretrained", "none", "--segments", "2", "--size", "32",
                                   "--batch", "4", "--workers", "0", "--no-progress", "--no-channels-last",
                                   "--epochs", "1", "--device", "cpu"])
    assert trained.exit_code == 0, trained.output
    assert "flow_pairs=source " in trained.output
    checkpoint = workdir / "runs" / "src" / "last.pt"
    assert torch.load(checkpoint, weights_only=True)["params"]["flow_pairs"] == "source"

    tested = runner.invoke(main, ["test", "--checkpoint", str(checkpoint), "-w", str(workdir), "--segments", "2",
                                  "--crops", "1", "--workers", "0", "--no-progress", "--device", "cpu",
                                  "--out", str(tmp_path / "flow.pkl")])
    assert tested.exit_code == 0, tested.output
    assert read_scores(tmp_path / "flow.pkl")["source"]["flow_pairs"] == "source"

    clip = SAMPLES / f"{WAVE}.avi"
    fast = ["--size", str(SHORT_SIDE), "--segments", "3", "--crops", "1", "--device", "cpu", "--json"]
    state = torch.load(checkpoint, weights_only=True)
    state["params"]["flow_pairs"] = "frames"
    torch.save(state, tmp_path / "frames.pt")
    outputs = {}
    for name, path in (("source", checkpoint), ("frames", tmp_path / "frames.pt")):
        result = runner.invoke(main, ["predict", str(clip), "--checkpoint", str(path), *fast])
        assert result.exit_code == 0, result.output
        expected = "pairs of source frames" if name == "source" else "pairs of extracted frames"
        assert expected in result.stderr
        outputs[name] = {row["class"]: row["score"] for row in json.loads(result.stdout)["classes"]}
    # same weights, other flow: the scores differ
    assert any(abs(outputs["source"][c] - outputs["frames"][c]) > 1e-4 for c in outputs["source"])
