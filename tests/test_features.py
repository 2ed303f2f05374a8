"""`tsnpipe extract-features` and `export-features` on the bundled clips, with tiny checkpoints trained here."""

from __future__ import annotations

import hashlib
import json
import shutil
import signal
import subprocess
import time
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest
import torch
import torchvision
from click.testing import CliRunner

from chaos import assert_one_line_error
from conftest import SAMPLES, run_tsnpipe, tsnpipe_cmd
from tsnpipe.cli import main
from tsnpipe.manifests.table import Manifest, journal_path
from tsnpipe.stages.features.bmn import csv_text, resample
from tsnpipe.stages.features.snippets import snippet_centres, window
from tsnpipe.stages.scores.files import read_scores
from train_workdir import build_sample_workdir

TINY = ["--backbone", "resnet18", "--pretrained", "none", "--segments", "2", "--size", "32", "--batch", "3",
        "--workers", "0", "--no-progress", "--no-channels-last"]
QUIET = ["--workers", "0", "--no-progress"]
EYE = "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01"  # 66 frames at 10 fps, source 25 fps
TRUMAN = "wave/TrumanShow_wave_f_nm_np1_fr_med_26"  # 17 frames
RGB_MEAN, RGB_STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])


def invoke(*args):
    return CliRunner().invoke(main, [str(arg) for arg in args], catch_exceptions=True)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """The 7 clips through the real extract-frames (short side 64, with its manifest), DIS flow, and an RGB and a
    flow ResNet-18 trained one epoch on them."""
    workdir = build_sample_workdir(tmp_path_factory.getbasetemp() / "feature_samples")
    if not (workdir / "manifests" / "frames.parquet").is_file():
        result = invoke("extract-frames", SAMPLES, "-w", workdir, "--size", "64", "-j", "2", "--no-progress")
        assert result.exit_code == 0, result.output
    for modality in ("rgb", "flow"):
        if not (workdir / "runs" / modality / "best.pt").is_file():
            result = invoke("train", "-w", workdir, "--modality", modality, "--epochs", "1", "--run-name", modality, *TINY)
            assert result.exit_code == 0, result.output
    return workdir


def checkpoints(workdir, *modalities):
    return [arg for modality in modalities for arg in ("--checkpoint", workdir / "runs" / modality / "best.pt")]


def extract(workdir, name, *args):
    return invoke("extract-features", "-w", workdir, "--name", name, *args, *QUIET)


# ---- where snippets sit, and the BMN resampling: hand computations ------------------------------------------


@pytest.mark.parametrize(("frames", "step", "centres", "short"), [
    (50, 16, [8, 24, 40], False),  # mmaction2 at the source rate: interval // 2 + k * interval, below the count
    (66, 11, [5, 16, 27, 38, 49, 60], False),  # --every 11
    (66, 6.4, [3, 9, 16, 22, 28, 35, 41, 48, 54, 60], False),  # 0.64 s (16 frames at 25 fps) at 10 fps
    (8, 16, [7], True),  # no centre inside: one snippet on the last frame
    (9, 16, [8], False),
])
def test_snippet_centres_follow_mmaction2(frames, step, centres, short):
    assert snippet_centres(frames, step) == (centres, short)


def test_snippet_windows_clamp_at_both_ends():
    assert window(0, 5, 10) == [0, 0, 0, 1, 2]
    assert window(9, 5, 10) == [7, 8, 9, 9, 9]
    assert window(5, 4, 10, stride=2) == [1, 3, 5, 7]


def test_bmn_resampling_equals_the_hand_computation():
    # T = 3, one step: anchor a = (2 - 2e-4) / 1; samples at 1e-4, 1e-4 + a/3, 1e-4 + 2a/3 = 0.0001, 0.6667, 1.3333.
    # Features t -> (t, t^2 at the integers, linear between): (0.0001 + 0.6667 + 1.3333) / 3 and
    # (0.0001 + 0.6667 + (1 + 0.3333 * 3)) / 3.
    table = resample(np.array([[0.0, 0.0], [1.0, 1.0], [2.0, 4.0]]), steps=1)
    assert table == pytest.approx(np.array([[2.0001 / 3, 2.6667 / 3]]), abs=1e-9)
    # T = 2 (0 then 10), two steps: a = 0.4999; step 0 averages 10 * (1e-4 + {0, a/3, 2a/3}), step 1 the same + a.
    table = resample(np.array([[0.0], [10.0]]), steps=2)
    assert table[:, 0] == pytest.approx([10 * (1e-4 + 0.4999 / 3), 10 * (1e-4 + 0.4999 + 0.4999 / 3)], abs=1e-9)
    assert np.array_equal(resample(np.array([[1.5, -2.0]]), steps=100), np.tile([[1.5, -2.0]], (100, 1)))
    assert resample(np.random.default_rng(0).random((37, 5)), steps=100).shape == (100, 5)
    assert csv_text(np.array([[0.123456, 2.0], [1.0, -0.00004]])) == "f0,f1\n0.1235,2.0000\n1.0000,-0.0000"


# ---- the stage on the bundled clips -------------------------------------------------------------------------


def test_two_streams_give_features_times_and_attributes_per_video(workdir):
    result = extract(workdir, "both", *checkpoints(workdir, "rgb", "flow"))
    assert result.exit_code == 0, result.output
    assert "7 extracted, 0 up to date, 0 failed" in result.output
    rgb_hash = hashlib.sha256((workdir / "runs" / "rgb" / "best.pt").read_bytes()).hexdigest()
    with h5py.File(workdir / "features" / "both.h5", "r") as handle:  # the index: external links to every video
        assert sorted(f"{group}/{video}" for group in handle for video in handle[group]) == sorted(
            Manifest(workdir, "frames").rows)
        video = handle[EYE]
        assert video["rgb"].shape == (10, 512) and video["flow"].shape == (10, 512)
        assert video["rgb"].dtype == np.float32
        # 16 frames at 25 fps = 0.64 s = 6.4 frames at 10 fps: centres floor(3.2), floor(9.6), ...
        assert video["times"][()] == pytest.approx(np.array([3, 9, 16, 22, 28, 35, 41, 48, 54, 60]) / 10)
        attrs = dict(video["rgb"].attrs)
        assert attrs["checkpoint_hash"] == rgb_hash and attrs["layer"] == "pool" and attrs["modality"] == "rgb"
        assert attrs["interval_s"] == pytest.approx(0.64) and attrs["crops"] == 1 and attrs["crop_size"] == 32
        assert video["flow"].attrs["modality"] == "flow"
        truman = handle[TRUMAN]  # 17 frames at 30 fps source: 16 frames = 0.533 s -> centres 2.67, 8, 13.3
        assert truman["times"][()] == pytest.approx([0.2, 0.8, 1.3])
    row = Manifest(workdir, "features-both").rows[EYE]
    assert row["status"] == "done" and row["snippets"] == 10 and row["dim"] == 1024 and not row["short"]


def test_pool_equals_an_independent_torchvision_forward_of_hand_built_snippets(workdir):
    result = extract(workdir, "pool_npy", *checkpoints(workdir, "rgb", "flow"), "--every", "11", "--format", "npy")
    assert result.exit_code == 0, result.output
    folder = workdir / "features" / "pool_npy" / EYE
    assert sorted(p.name for p in folder.iterdir()) == ["flow.npy", "rgb.npy", "times.npy"]
    centres = [5, 16, 27, 38, 49, 60]  # floor((k + 1/2) * 11) below 66 frames
    assert np.load(folder / "times.npy") == pytest.approx(np.array(centres) / 10)

    def backbone(modality, channels):
        state = torch.load(workdir / "runs" / modality / "best.pt", map_location="cpu", weights_only=True)["model"]
        net = torchvision.models.resnet18()
        net.fc = torch.nn.Identity()
        net.conv1 = torch.nn.Conv2d(channels, 64, 7, 2, 3, bias=False)
        net.load_state_dict({k.removeprefix("base."): v for k, v in state.items() if k.startswith("base.")})
        return net.eval()

    def centre(image):
        top, left = (image.shape[0] - 32) // 2, (image.shape[1] - 32) // 2
        return image[top:top + 32, left:left + 32].astype(np.float32)

    frames, flow = workdir / "frames" / EYE, workdir / "flow" / EYE
    rgb = [(centre(cv2.imread(str(frames / f"img_{c + 1:05d}.jpg"))[..., ::-1]) / 255 - RGB_MEAN) / RGB_STD
           for c in centres]
    rgb = torch.from_numpy(np.stack(rgb).transpose(0, 3, 1, 2).astype(np.float32))
    pairs, grey_std = 65, (0.229 + 0.224 + 0.225) / 3
    stacks = []
    for c in centres:  # 5 pairs from centre - 2, clamped; channels x1, y1, ..., x5, y5
        channels = []
        for p in [min(max(c - 2 + i, 0), pairs - 1) for i in range(5)]:
            for axis in "xy":
                q = centre(cv2.imread(str(flow / f"flow_{axis}_{p + 1:05d}.jpg"), cv2.IMREAD_GRAYSCALE))
                channels.append((q - 128) / 255 / grey_std)
        stacks.append(np.stack(channels))
    flow_input = torch.from_numpy(np.stack(stacks).astype(np.float32))
    with torch.no_grad():
        expected_rgb = backbone("rgb", 3)(rgb).numpy()
        expected_flow = backbone("flow", 10)(flow_input).numpy()
    assert np.load(folder / "rgb.npy") == pytest.approx(expected_rgb, abs=1e-4)
    assert np.load(folder / "flow.npy") == pytest.approx(expected_flow, abs=1e-4)


def test_scores_of_a_snippet_set_equal_what_tsnpipe_test_computes(workdir, tmp_path):
    # 66 frames = 6 segments of 11: test's 6 segment centres int(5.5 + 11 i) are the snippets of --every 11.
    result = extract(workdir, "scores", *checkpoints(workdir, "rgb"), "--every", "11", "--layer", "scores",
                     "--crops", "3")
    assert result.exit_code == 0, result.output
    out = tmp_path / "rgb.pkl"
    tested = invoke("test", "--checkpoint", workdir / "runs" / "rgb" / "best.pt", "-w", workdir, "--segments", "6",
                    "--crops", "3", "--out", out, "--workers", "0", "--no-progress")
    assert tested.exit_code == 0, tested.output
    scores = read_scores(out)
    expected = scores["scores"][scores["video_ids"].index(EYE)]
    with h5py.File(workdir / "features" / "scores" / EYE / "features.h5", "r") as handle:
        snippets = handle["rgb"][()]
    assert snippets.shape == (6, 4)
    assert snippets.mean(axis=0) == pytest.approx(expected, abs=1e-5)


def test_rerun_is_noop_and_a_changed_checkpoint_redoes_every_video(workdir, tmp_path):
    checkpoint = tmp_path / "rgb.pt"
    shutil.copy(workdir / "runs" / "rgb" / "best.pt", checkpoint)
    first = extract(workdir, "changing", "--checkpoint", checkpoint)
    assert first.exit_code == 0 and "7 extracted" in first.output, first.output
    path = workdir / "features" / "changing" / EYE / "features.h5"
    before = path.read_bytes()
    again = extract(workdir, "changing", "--checkpoint", checkpoint)
    assert again.exit_code == 0 and "0 extracted, 7 up to date, 0 failed" in again.output, again.output
    assert path.read_bytes() == before
    moved = tmp_path / "moved.pt"
    shutil.copy(checkpoint, moved)
    elsewhere = extract(workdir, "changing", "--checkpoint", moved)  # the same bytes at another path
    assert "0 extracted, 7 up to date" in elsewhere.output, elsewhere.output
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    state["model"]["base.conv1.weight"] *= 1.5  # the same run, other weights: its content hash changes
    torch.save(state, checkpoint)
    changed = extract(workdir, "changing", "--checkpoint", checkpoint)
    assert changed.exit_code == 0 and "7 extracted, 0 up to date" in changed.output and "7 params changed" in changed.output
    with h5py.File(path, "r") as handle:
        assert handle["rgb"].attrs["checkpoint_hash"] == hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    assert path.read_bytes() != before


def test_a_video_shorter_than_one_snippet_gets_one_clamped_snippet(workdir):
    result = extract(workdir, "long_interval", *checkpoints(workdir, "rgb"), "--interval", "5")
    assert result.exit_code == 0, result.output
    rows = Manifest(workdir, "features-long_interval").rows
    assert rows[TRUMAN]["short"] and rows[TRUMAN]["snippets"] == 1  # 1.7 s: no centre at 2.5 s inside it
    assert not rows[EYE]["short"] and rows[EYE]["snippets"] == 1  # 6.6 s: one centre, at 2.5 s
    with h5py.File(workdir / "features" / "long_interval.h5", "r") as handle:
        assert handle[TRUMAN]["times"][()] == pytest.approx([1.6])  # the last of its 17 frames
        assert handle[EYE]["times"][()] == pytest.approx([2.5])


def test_imagenet_backbone_without_a_checkpoint_from_a_weights_file(workdir, tmp_path):
    weights = tmp_path / "resnet18.pth"
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18().state_dict(), weights)
    result = extract(workdir, "imagenet", "--backbone", "resnet18", "--pretrained", weights, "--every", "30")
    assert result.exit_code == 0, result.output
    with h5py.File(workdir / "features" / "imagenet.h5", "r") as handle:
        assert handle[EYE]["rgb"].shape == (2, 512) and handle[EYE]["rgb"].attrs["crop_size"] == 224
    refused = extract(workdir, "imagenet_scores", "--backbone", "resnet18", "--pretrained", weights, "--layer", "scores")
    assert_one_line_error(refused, "--layer scores needs a trained checkpoint")


def test_export_writes_bmn_csvs_with_the_streams_side_by_side(workdir, tmp_path):
    assert extract(workdir, "both", *checkpoints(workdir, "rgb", "flow")).exit_code == 0
    result = invoke("export-features", "both", "-w", workdir, "--bmn", "100", "--no-progress")
    assert result.exit_code == 0 and "7 CSVs written, 0 up to date" in result.output, result.output
    csv = workdir / "features" / "both_bmn100" / f"{EYE}.csv"
    lines = csv.read_text().split("\n")
    assert len(lines) == 101 and lines[0] == ",".join(f"f{i}" for i in range(1024))
    with h5py.File(workdir / "features" / "both.h5", "r") as handle:
        rgb, flow = handle[EYE]["rgb"][()], handle[EYE]["flow"][()]
    table = np.array([[float(x) for x in line.split(",")] for line in lines[1:]])
    assert table[:, :512] == pytest.approx(resample(rgb), abs=6e-5)
    assert table[:, 512:] == pytest.approx(resample(flow), abs=6e-5)
    again = invoke("export-features", "both", "-w", workdir, "--bmn", "100", "--no-progress")
    assert "0 CSVs written, 7 up to date" in again.output, again.output
    other = run_tsnpipe("export-features", "both", "-w", str(workdir), "--bmn", "10", "--out", str(tmp_path / "csv"),
                        "--no-progress")
    assert other.returncode == 0 and "7 CSVs written" in other.stdout, other.stderr
    assert len((tmp_path / "csv" / f"{TRUMAN}.csv").read_text().split("\n")) == 11


def test_features_from_a_packed_store_equal_those_from_the_folders(workdir):
    assert extract(workdir, "both", *checkpoints(workdir, "rgb", "flow")).exit_code == 0
    packed = invoke("pack", "-w", workdir, "--format", "hdf5", "--no-progress")
    assert packed.exit_code == 0, packed.output
    result = extract(workdir, "from_store", *checkpoints(workdir, "rgb", "flow"), "--store",
                     workdir / "stores" / "frames.hdf5")
    assert result.exit_code == 0 and "7 extracted" in result.output, result.output
    with h5py.File(workdir / "features" / "both.h5", "r") as a, h5py.File(workdir / "features" / "from_store.h5", "r") as b:
        for name in ("rgb", "flow", "times"):
            assert np.array_equal(a[EYE][name][()], b[EYE][name][()])


# ---- bad input: one line ------------------------------------------------------------------------------------


def test_bad_input_is_one_line(workdir, tmp_path):
    missing = invoke("extract-features", "-w", workdir, "--name", "x", "--checkpoint", workdir / "runs" / "nope.pt")
    assert missing.exit_code == 1 and "There is no checkpoint" in missing.output and "Traceback" not in missing.output
    assert_one_line_error(extract(workdir, "c3d_layer", *checkpoints(workdir, "rgb"), "--layer", "fc6"), "C3D")
    assert_one_line_error(invoke("export-features", "never", "-w", workdir, "--bmn", "100"), "no feature set 'never'")
    both = invoke("extract-features", "-w", workdir, "--name", "x", "--every", "3", "--interval", "1")
    assert both.exit_code == 2 and "not both" in both.output
    bad_name = invoke("extract-features", "-w", workdir, "--name", "../x")
    assert bad_name.exit_code == 2 and "cannot name a feature set" in bad_name.output


def test_a_video_without_flow_is_a_failed_row_naming_extract_flow(workdir, tmp_path):
    copy = tmp_path / "w"
    for part in ("frames", "manifests"):
        shutil.copytree(workdir / part, copy / part)
    shutil.copytree(workdir / "flow", copy / "flow", ignore=lambda folder, names: [n for n in names if "Truman" in n])
    result = extract(copy, "flowless", *checkpoints(workdir, "flow"))
    assert result.exit_code == 1, result.output
    assert "6 extracted, 0 up to date, 1 failed" in result.output
    row = Manifest(copy, "features-flowless").rows[TRUMAN]
    assert row["status"] == "failed" and "tsnpipe extract-flow" in row["error"]
    with h5py.File(copy / "features" / "flowless.h5", "r") as handle:
        assert TRUMAN not in handle and EYE in handle


# ---- crashes ------------------------------------------------------------------------------------------------


def kill_after_the_first_video(workdir, name, args) -> int:
    """Start extract-features NAME, SIGKILL it once its journal holds a row; returns the rows it holds."""
    journal = journal_path(workdir, f"features-{name}")
    proc = subprocess.Popen(tsnpipe_cmd("extract-features", "-w", str(workdir), "--name", name, *map(str, args)),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not (journal.exists() and journal.read_bytes().count(b"\n") >= 1):
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return journal.read_bytes().count(b"\n")


def test_kill_then_rerun_gives_identical_datasets(workdir, tmp_path):
    args = [*checkpoints(workdir, "rgb", "flow"), "--interval", "0.2", *QUIET]
    clean = extract(workdir, "clean", *args[:-len(QUIET)])
    assert clean.exit_code == 0, clean.output
    finished = kill_after_the_first_video(workdir, "killed", args)
    assert 1 <= finished < 7
    rerun = run_tsnpipe("extract-features", "-w", str(workdir), "--name", "killed", *map(str, args))
    assert rerun.returncode == 0, rerun.stderr
    assert f"{7 - finished} extracted, {finished} up to date, 0 failed" in rerun.stdout
    assert not list((workdir / "features" / "killed").rglob("*.tmp-*"))
    with h5py.File(workdir / "features" / "clean.h5", "r") as a, h5py.File(workdir / "features" / "killed.h5", "r") as b:
        for video_id in Manifest(workdir, "frames").rows:
            for name in ("rgb", "flow", "times"):
                assert a[video_id][name][()].tobytes() == b[video_id][name][()].tobytes(), (video_id, name)
    runs = json.loads((workdir / "manifests" / "features-killed.run.json").read_text())
    assert runs["params"]["streams"][1]["modality"] == "flow"


# ---- C3D's extractor ------------------------------------------------------------------------------------------


def test_c3d_fc6_and_fc7_of_16_frame_clips_every_8_frames(workdir):
    if not (workdir / "runs" / "c3d" / "best.pt").is_file():
        trained = invoke("train", "-w", workdir, "--modality", "rgb", "--arch", "c3d", "--clip-len", "16", "--size", "32",
                         "--epochs", "1", "--batch", "4", "--workers", "0", "--no-progress", "--run-name", "c3d")
        assert trained.exit_code == 0, trained.output
    features = {}
    for layer in ("fc6", "fc7"):
        result = extract(workdir, f"c3d_{layer}", *checkpoints(workdir, "c3d"), "--layer", layer, "--every", "8")
        assert result.exit_code == 0, result.output
        with h5py.File(workdir / "features" / f"c3d_{layer}.h5", "r") as handle:
            features[layer] = handle[EYE]["rgb"][()]
            assert handle[EYE]["times"][()] == pytest.approx(np.array([4, 12, 20, 28, 36, 44, 52, 60]) / 10)
    assert features["fc6"].shape == features["fc7"].shape == (8, 4096)
    state = torch.load(workdir / "runs" / "c3d" / "best.pt", map_location="cpu", weights_only=True)["model"]
    weight, bias = state["base.fc7.weight"].double().numpy(), state["base.fc7.bias"].double().numpy()
    assert features["fc7"] == pytest.approx(np.maximum(features["fc6"] @ weight.T + bias, 0), abs=1e-4)
    assert (features["fc6"] >= 0).all()
    assert_one_line_error(extract(workdir, "c3d_pool_flow", *checkpoints(workdir, "rgb"), "--layer", "fc7"), "C3D")


def test_shards_then_a_plain_run_give_the_features_and_index_of_a_plain_run(workdir):
    from tsnpipe.manifests.shards import shard_journals

    ckpt = checkpoints(workdir, "rgb")
    plain = extract(workdir, "whole", *ckpt)
    assert plain.exit_code == 0 and "7 extracted" in plain.output, plain.output
    for k in range(2):
        shard = extract(workdir, "halves", *ckpt, "--shard", f"{k}/2")
        assert shard.exit_code == 0 and " 0 up to date, 0 failed" in shard.output, shard.output
    assert not (workdir / "features" / "halves.h5").exists()  # one index for all shards: not theirs to write
    assert len(shard_journals(workdir, "features-halves")) == 2
    fold = extract(workdir, "halves", *ckpt)
    assert fold.exit_code == 0 and "0 extracted, 7 up to date, 0 failed" in fold.output, fold.output
    assert shard_journals(workdir, "features-halves") == []
    with h5py.File(workdir / "features" / "halves.h5", "r") as halves, \
            h5py.File(workdir / "features" / "whole.h5", "r") as whole:
        videos = sorted(f"{group}/{video}" for group in halves for video in halves[group])
        assert videos == sorted(Manifest(workdir, "frames").rows)
        for video in videos:
            assert np.allclose(halves[video]["rgb"][()], whole[video]["rgb"][()], atol=1e-5)


# ---- the same input and the same view rule as `tsnpipe test` ---------------------------------------------------


@pytest.mark.parametrize(("arch", "c3d_input"), [
    ("c3d", "kinetics"),  # antialiased resize, Kinetics normalisation
    ("c3d", "sports1m"),  # no antialiasing, 0..255 BGR minus the Sports-1M means
    ("r2plus1d_18", "kinetics"),  # torchvision's video weights: no antialiasing
])
def test_3d_features_are_fed_the_input_test_feeds_the_checkpoint(workdir, arch, c3d_input):
    from tsnpipe.stages.features.extract import stream_inputs
    from tsnpipe.stages.features.models import Stream
    from tsnpipe.stages.store.reader import open_reader
    from tsnpipe.stages.train.clips import clip_positions, clip_span, dataset_for, even_starts
    from tsnpipe.stages.train.data import read_split, read_stack
    from tsnpipe.stages.train.recipe import make_params

    params = make_params("rgb", arch=arch, pretrained="none", c3d_input=c3d_input, clip_len=16, size=32,
                         split_dir=str(workdir / "splits" / "samples" / "split1"), store=str(workdir))
    _, table, _ = read_split(params.split_dir)
    table = table[table["video_id"] == EYE]
    clips, crops = 3, 3
    tested, _ = dataset_for(params, table, "test", workdir, clips, crops)[0]  # [crops, clips, C, T, S, S]
    count = int(table["frames"].iloc[0])
    positions = [p for start in even_starts(count, clips, clip_span(16, 1)) for p in clip_positions(start, 16, 1, count)]
    stack = read_stack(open_reader(workdir), EYE, positions, "rgb")
    fed = stream_inputs(Stream("rgb", params, "c", "h"), [(clips, stack)], crops, torch.device("cpu"), clips * crops)
    assert torch.equal(fed.view(clips, crops, *fed.shape[1:]).transpose(0, 1), tested)


def flipped_checkpoint(workdir, tmp_path, flip):
    """The RGB checkpoint with another flip rule recorded (classes 0 and 1 a left/right pair)."""
    state = torch.load(workdir / "runs" / "rgb" / "best.pt", map_location="cpu", weights_only=False)
    state["params"] = {**state["params"], "flip": flip, "flip_pairs": [[0, 1]] if flip == "swap-labels" else []}
    path = tmp_path / f"rgb_{flip}.pt"
    torch.save(state, path)
    return path


@pytest.mark.parametrize("flip", ["swap-labels", "off"])
def test_ten_crop_scores_follow_the_checkpoints_flip_rule_as_test_does(workdir, tmp_path, flip):
    checkpoint = flipped_checkpoint(workdir, tmp_path, flip)
    name = f"ten_{flip}"
    result = invoke("extract-features", "-w", workdir, "--name", name, "--checkpoint", checkpoint, "--every", "11",
                    "--layer", "scores", "--crops", "10", *QUIET)
    assert result.exit_code == 0, result.output
    out = tmp_path / "scores.pkl"
    tested = invoke("test", "--checkpoint", checkpoint, "-w", workdir, "--segments", "6", "--crops", "10", "--out", out,
                    "--workers", "0", "--no-progress")
    assert tested.exit_code == 0, tested.output
    scores = read_scores(out)
    expected = scores["scores"][scores["video_ids"].index(EYE)]
    with h5py.File(workdir / "features" / name / EYE / "features.h5", "r") as handle:
        snippets = handle["rgb"][()]
    assert snippets.mean(axis=0) == pytest.approx(expected, abs=1e-5)


def test_ten_crop_pool_features_of_a_swap_labels_checkpoint_leave_the_mirrored_views_out(workdir, tmp_path):
    features = {}
    for flip in ("swap-labels", "off", "on"):
        checkpoint = flipped_checkpoint(workdir, tmp_path, flip)
        result = invoke("extract-features", "-w", workdir, "--name", f"pool_{flip}", "--checkpoint", checkpoint,
                        "--every", "11", "--crops", "10", *QUIET)
        assert result.exit_code == 0, result.output
        with h5py.File(workdir / "features" / f"pool_{flip}" / EYE / "features.h5", "r") as handle:
            features[flip] = handle["rgb"][()]
    assert features["swap-labels"] == pytest.approx(features["off"], abs=1e-6)
    assert not np.allclose(features["swap-labels"], features["on"], atol=1e-4)


def test_export_puts_rgb_before_flow_whatever_the_checkpoint_order(workdir, tmp_path):
    assert extract(workdir, "flow_first", *checkpoints(workdir, "flow", "rgb")).exit_code == 0
    result = invoke("export-features", "flow_first", "-w", workdir, "--bmn", "10", "--out", tmp_path, "--no-progress")
    assert result.exit_code == 0 and "10 steps x rgb+flow" in result.output, result.output
    with h5py.File(workdir / "features" / "flow_first.h5", "r") as handle:
        rgb, flow = handle[EYE]["rgb"][()], handle[EYE]["flow"][()]
    lines = (tmp_path / f"{EYE}.csv").read_text().split("\n")
    table = np.array([[float(x) for x in line.split(",")] for line in lines[1:]])
    assert table[:, :512] == pytest.approx(resample(rgb, 10), abs=6e-5)
    assert table[:, 512:] == pytest.approx(resample(flow, 10), abs=6e-5)


# ---- batching across videos and precision ---------------------------------------------------------------------


def read_features(root: Path, video_ids) -> dict:
    from tsnpipe.stages.features.writers import read_video

    return {video_id: read_video(root / video_id, ["rgb", "flow"])[0] for video_id in video_ids}


def test_a_batch_across_videos_gives_the_features_of_one_video_at_a_time(workdir, tmp_path):
    from tsnpipe.cmd_features import feature_items
    from tsnpipe.stages.features.extract import Spacing, extract_videos
    from tsnpipe.stages.features.models import checkpoint_streams

    items, facts = feature_items(workdir, flow_stream=True)
    video_ids = [item.video_id for item in items]
    streams = checkpoint_streams([workdir / "runs" / "rgb" / "best.pt", workdir / "runs" / "flow" / "best.pt"])
    cpu = torch.device("cpu")

    def run(jobs, out):
        outcomes = list(extract_videos([(v, out / v) for v in jobs], facts, streams, Spacing(every=4), "pool", 1,
                                       "hdf5", workdir, cpu, batch=16))
        assert all(isinstance(facts_, dict) for _, facts_ in outcomes), outcomes
        return outcomes

    together = run(video_ids, tmp_path / "together")  # 7 videos, about 70 snippets: batches of 16 across videos
    assert len(together) == len(video_ids)
    for video_id in video_ids:
        run([video_id], tmp_path / "alone")
    batched, alone = read_features(tmp_path / "together", video_ids), read_features(tmp_path / "alone", video_ids)
    for video_id in video_ids:
        for stream in ("rgb", "flow"):
            np.testing.assert_allclose(batched[video_id][stream], alone[video_id][stream], rtol=1e-5, atol=1e-6)


def overflowing_checkpoint(workdir: Path, tmp_path: Path, scale: float) -> Path:
    """The RGB checkpoint with its first convolution `scale` times larger: past fp16's 65,504 when scale is large."""
    state = torch.load(workdir / "runs" / "rgb" / "best.pt", map_location="cpu", weights_only=False)
    state["model"]["base.conv1.weight"] *= scale
    path = tmp_path / f"rgb_x{int(scale)}.pt"
    torch.save(state, path)
    return path


@pytest.mark.parametrize("scale, overflows", [(1e6, True), (1.0, False)])
def test_fp16_features_that_overflow_are_computed_again_in_fp32(workdir, tmp_path, scale, overflows):
    checkpoint = overflowing_checkpoint(workdir, tmp_path, scale)
    features = {}
    for precision in ("fp32", "fp16"):
        name = f"precision_{precision}_{int(scale)}"
        result = extract(workdir, name, "--checkpoint", checkpoint, "--every", "11", "--precision", precision)
        assert result.exit_code == 0, result.output
        assert f"cpu, {precision}" in result.output
        rows = Manifest(workdir, f"features-{name}").rows
        redone = sum(int(row["fp32_snippets"]) for row in rows.values())
        with h5py.File(workdir / "features" / name / EYE / "features.h5", "r") as handle:
            features[precision] = handle["rgb"][()]
            assert handle["rgb"].attrs["precision"] == precision
        assert np.isfinite(features[precision]).all()
    snippets = sum(int(row["snippets"]) for row in rows.values())
    if overflows:
        assert redone == snippets  # every fp16 snippet overflowed, every one was computed again in fp32
        np.testing.assert_allclose(features["fp16"], features["fp32"], rtol=1e-6)
    else:
        assert redone == 0
        assert not np.array_equal(features["fp16"], features["fp32"])  # fp16 features, not fp32 ones
        np.testing.assert_allclose(features["fp16"], features["fp32"], rtol=2e-2, atol=2e-2)


def test_precision_is_a_setting_reruns_key_on_and_amp_means_bf16(workdir):
    first = extract(workdir, "keyed", *checkpoints(workdir, "rgb"), "--every", "30")
    assert first.exit_code == 0 and "cpu, fp32" in first.output and "7 extracted" in first.output, first.output
    same = extract(workdir, "keyed", *checkpoints(workdir, "rgb"), "--every", "30", "--precision", "fp32")
    assert "0 extracted, 7 up to date" in same.output, same.output  # fp32 is the CPU's default: nothing to redo
    bf16 = extract(workdir, "keyed", *checkpoints(workdir, "rgb"), "--every", "30", "--amp")
    assert bf16.exit_code == 0 and "cpu, bf16" in bf16.output, bf16.output
    assert "7 extracted, 0 up to date" in bf16.output and "7 params changed" in bf16.output, bf16.output
    with h5py.File(workdir / "features" / "keyed" / EYE / "features.h5", "r") as handle:
        assert handle["rgb"].attrs["precision"] == "bf16"


def test_status_after_a_kill_counts_the_videos_not_yet_extracted(workdir):
    args = [*checkpoints(workdir, "rgb"), "--interval", "0.5", *QUIET]
    finished = kill_after_the_first_video(workdir, "cut", args)
    assert 1 <= finished < 7
    status = run_tsnpipe("status", "-w", str(workdir), "--json")
    counts = json.loads(status.stdout)["features-cut"]
    assert counts["up to date"] == finished and counts["new"] == 7 - finished, counts
    assert run_tsnpipe("extract-features", "-w", str(workdir), "--name", "cut", *map(str, args)).returncode == 0
    counts = json.loads(run_tsnpipe("status", "-w", str(workdir), "--json").stdout)["features-cut"]
    assert counts["up to date"] == 7 and counts["new"] == 0, counts
