"""3D runs through the real CLI: a kill mid-epoch resumes exactly, `tsnpipe test --subset val` scores a 3D
checkpoint with the clip defaults, and 3D scores fuse with TSN's."""

import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from conftest import run_tsnpipe, tsnpipe_cmd
from tsnpipe.cli import main
from tsnpipe.stages.scores.evaluate import score_split
from tsnpipe.stages.scores.fuse import fuse_files
from tsnpipe.stages.scores.protocol import CLIP_TEST_CLIPS, CLIP_TEST_CROPS
from tsnpipe.stages.scores.files import read_scores
from tsnpipe.stages.train.checkpoint import load_checkpoint
from tsnpipe.stages.train.loop import fit
from tsnpipe.stages.train.recipe import make_params
from train_workdir import build_sample_workdir

TINY_3D = ["--arch", "mc3_18", "--pretrained", "none", "--clip-len", "4", "--stride", "2", "--size", "16",
           "--batch", "2", "--lr", "0.01", "--workers", "0", "--device", "cpu", "--no-progress", "--deterministic"]


@pytest.fixture(scope="session")
def workdir(tmp_path_factory):
    return build_sample_workdir(tmp_path_factory.getbasetemp() / "train_samples")


def train_args(workdir, run_name, epochs, *extra):
    return ["train", "-w", str(workdir), "--modality", "rgb", "--run-name", run_name, "--epochs", str(epochs), *TINY_3D, *extra]


@pytest.mark.slow
def test_kill_mid_epoch_then_resume_gives_the_weights_of_an_uninterrupted_run(workdir, tmp_path):
    tag = tmp_path.name
    straight = run_tsnpipe(*train_args(workdir, f"straight_{tag}", 2))
    assert straight.returncode == 0, straight.stderr
    run_dir = workdir / "runs" / f"killed_{tag}"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(tsnpipe_cmd(*train_args(workdir, f"killed_{tag}", 2)), env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not (run_dir / "last.pt").exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)  # epoch 1 is saved; epoch 2 is under way
    assert process.wait() == -signal.SIGKILL
    assert load_checkpoint(run_dir / "last.pt")["epoch"] == 1
    resumed = run_tsnpipe(*train_args(workdir, f"killed_{tag}", 2), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stdout
    expected = load_checkpoint(workdir / "runs" / f"straight_{tag}" / "last.pt")
    got = load_checkpoint(run_dir / "last.pt")
    assert got["epoch"] == expected["epoch"] == 2
    for key, tensor in expected["model"].items():
        assert torch.equal(tensor, got["model"][key]), key
    assert [line.split(",")[0] for line in (run_dir / "metrics.csv").read_text().splitlines()[1:]] == ["1", "2"]


def tiny_run_params(split, workdir):
    return dict(split_dir=str(split), store=str(workdir), pretrained="none", epochs=1, lr=0.01, lr_steps=[100], batch=7,
                dropout=0.0, workers=0)


@pytest.fixture(scope="module")
def clip_run(workdir, tmp_path_factory):
    """A one-epoch R(2+1)D-18 run in a workdir of its own whose split has a val.csv: the 3 clips after each class's
    first go from train.csv to val.csv, as `build-splits --val-ratio` would move them; test.csv keeps all 7."""
    root = tmp_path_factory.mktemp("clip_workdir")
    split = root / "splits" / "samples" / "split1"
    shutil.copytree(workdir / "splits" / "samples" / "split1", split)
    train = pd.read_csv(split / "train.csv")
    first = train.groupby("label").cumcount() == 0
    train[first].to_csv(split / "train.csv", index=False)
    train[~first].to_csv(split / "val.csv", index=False)
    params = make_params("rgb", arch="r2plus1d_18", clip_len=4, stride=2, size=16, **tiny_run_params(split, workdir))
    fit(params, root / "runs" / "clip", progress=False, log=lambda line: None)
    return root


def test_test_command_scores_a_3d_checkpoint_with_clip_defaults_on_the_val_list(workdir, clip_run):
    result = CliRunner().invoke(main, ["test", "--checkpoint", str(clip_run / "runs" / "clip" / "last.pt"), "-w",
                                       str(clip_run), "--store", str(workdir), "--subset", "val", "--workers", "0",
                                       "--device", "cpu", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "on the val list" in result.output and f"{CLIP_TEST_CLIPS} clips of 4 x {CLIP_TEST_CROPS} crops" in result.output
    written = read_scores(clip_run / "scores" / "clip_val.pkl")
    val = pd.read_csv(clip_run / "splits" / "samples" / "split1" / "val.csv")
    assert sorted(written["video_ids"]) == sorted(val["video_id"])
    assert written["source"]["subset"] == "val" and written["source"]["arch"] == "r2plus1d_18"
    aggregation = written["aggregation"]
    assert (aggregation["segments"], aggregation["crops"], aggregation["clip_len"], aggregation["stride"]) == (
        CLIP_TEST_CLIPS, int(CLIP_TEST_CROPS), 4, 2)
    assert written["scores"].shape == (3, 4) and np.isfinite(written["scores"]).all()


def test_3d_score_file_fuses_with_a_tsn_one_by_video_id(workdir, clip_run, tmp_path):
    split = workdir / "splits" / "samples" / "split1"
    tsn = make_params("rgb", backbone="resnet18", segments=2, size=32, channels_last=False, **tiny_run_params(split, workdir))
    fit(tsn, tmp_path / "tsn", progress=False, log=lambda line: None)
    tsn_scores = score_split(tmp_path / "tsn" / "last.pt", tmp_path / "tsn.pkl", segments=2, crops=1, workers=0, progress=False)
    clip_scores = score_split(clip_run / "runs" / "clip" / "last.pt", tmp_path / "clip.pkl", split_dir=split, segments=2,
                              crops=3, workers=0, progress=False)
    assert tsn_scores["videos"] == clip_scores["videos"] == 7
    written = read_scores(tmp_path / "clip.pkl")
    assert written["aggregation"]["crops"] == 3 and written["aggregation"]["clip_len"] == 4
    assert written["source"]["arch"] == "r2plus1d_18"
    result = fuse_files([tmp_path / "tsn.pkl", tmp_path / "clip.pkl"], weights=(1.0, 1.0), output=tmp_path / "fused.pkl")
    fused = read_scores(tmp_path / "fused.pkl")
    tsn_file = read_scores(tmp_path / "tsn.pkl")
    order = np.argsort(tsn_file["video_ids"])
    assert sorted(fused["video_ids"]) == sorted(written["video_ids"])
    by_id = dict(zip(written["video_ids"], written["scores"]))
    expected = {v: s + by_id[v] for v, s in zip(np.array(tsn_file["video_ids"])[order], tsn_file["scores"][order])}
    for video_id, scores in zip(fused["video_ids"], fused["scores"]):
        assert np.allclose(scores, expected[video_id], atol=1e-5)
    assert len(result.rows) == 3  # both inputs and the fusion are measured


def test_train_and_test_help_load_no_torch():
    code = ("import sys; from click.testing import CliRunner; from tsnpipe.cli import main; "
            "r = [CliRunner().invoke(main, [c, '--help']) for c in ('train', 'test', 'build-splits')]; "
            "print(all(x.exit_code == 0 and '--arch' in r[0].output for x in r), 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.split() == ["True", "False"], out.stderr
