"""`tsnpipe train` and `tsnpipe test` through Click's runner and as real processes."""

import json
import os
import warnings

import pytest
from click.testing import CliRunner

from conftest import run_tsnpipe
from tsnpipe.cli import main
from tsnpipe.stages.scores.files import read_scores
from train_workdir import build_sample_workdir

TINY = ["--backbone", "resnet18", "--pretrained", "none", "--segments", "2", "--size", "32", "--batch", "3",
        "--workers", "0", "--no-progress", "--no-channels-last"]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return build_sample_workdir(tmp_path_factory.getbasetemp() / "train_samples")


def test_train_then_test_write_a_run_and_a_score_file(workdir, tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, ["train", "-w", str(workdir), "--modality", "flow", "--epochs", "1", "--run-name", "cli_flow", *TINY])
    assert result.exit_code == 0, result.output
    assert "length=5*" in result.output and "dropout=0.7*" in result.output and "lr_steps=190,300*" in result.output
    assert "backbone=resnet18 " in result.output
    run = workdir / "runs" / "cli_flow"
    assert {"last.pt", "best.pt", "metrics.csv", "curves.png", "tensorboard"} <= {p.name for p in run.iterdir()}

    out = tmp_path / "flow.pkl"
    result = runner.invoke(main, ["test", "--checkpoint", str(run / "best.pt"), "-w", str(workdir), "--segments", "4",
                                  "--crops", "3", "--out", str(out), "--workers", "0", "--no-progress"])
    assert result.exit_code == 0, result.output
    report = json.loads(out.with_suffix(".json").read_text())
    assert f"top-1 {report['top1']:.4f}" in result.output and f"mean class {report['mean_class']:.4f}" in result.output
    assert read_scores(out)["aggregation"]["crops"] == 3


def test_train_refuses_to_overwrite_a_run_and_resumes_it_when_asked(workdir):
    runner = CliRunner()
    args = ["train", "-w", str(workdir), "--modality", "rgb", "--run-name", "cli_resume", *TINY]
    assert runner.invoke(main, [*args, "--epochs", "1"]).exit_code == 0
    again = runner.invoke(main, [*args, "--epochs", "1"])
    assert again.exit_code == 1 and "already holds a checkpoint; pass --resume" in again.output
    resumed = runner.invoke(main, ["train", "-w", str(workdir), "--modality", "rgb", "--run-name", "cli_resume", "--resume",
                                   "--epochs", "2", "--no-progress"])
    assert resumed.exit_code == 0, resumed.output
    assert "resuming" in resumed.output and "epoch 2/2" in resumed.output and "epoch 1/2" not in resumed.output


def test_bad_options_are_one_line_errors(workdir):
    runner = CliRunner()
    result = runner.invoke(main, ["train", "-w", str(workdir), "--modality", "rgb", "--lr-steps", "30;60", *TINY])
    assert result.exit_code == 2 and "comma-separated" in result.output
    result = runner.invoke(main, ["train", "-w", str(workdir), "--modality", "rgb", "--run-name", "cli_missing",
                                  *TINY[:2], "--pretrained", str(workdir / "nothing.pth"), *TINY[4:]])
    assert result.exit_code == 1 and "Cannot load backbone weights" in result.output and "Traceback" not in result.output


@pytest.mark.slow
def test_train_and_test_run_as_real_processes(workdir, tmp_path):
    trained = run_tsnpipe("train", "-w", str(workdir), "--modality", "rgbdiff", "--length", "2", "--epochs", "1",
                          "--run-name", "process_rgbdiff", *TINY, timeout=300)
    assert trained.returncode == 0, trained.stderr
    assert "epoch 1/1" in trained.stdout
    out = tmp_path / "rgbdiff.pkl"
    tested = run_tsnpipe("test", "--checkpoint", str(workdir / "runs" / "process_rgbdiff" / "last.pt"), "-w", str(workdir),
                         "--segments", "3", "--crops", "1", "--out", str(out), "--workers", "0", "--no-progress", timeout=300)
    assert tested.returncode == 0, tested.stderr
    assert "7 videos: top-1" in tested.stdout
    assert read_scores(out)["scores"].shape == (7, 4)


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2, reason="needs 2 cores and affinity")
def test_on_two_cores_train_and_test_pick_worker_counts_the_loader_does_not_warn_about(workdir, tmp_path):
    runner = CliRunner()
    cores = os.sched_getaffinity(0)
    no_workers_option = [arg for arg in TINY if arg not in ("--workers", "0")]
    os.sched_setaffinity(0, sorted(cores)[:2])
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            trained = runner.invoke(main, ["train", "-w", str(workdir), "--modality", "rgb", "--epochs", "1",
                                           "--run-name", "cli_two_cores", *no_workers_option])
            tested = runner.invoke(main, ["test", "--checkpoint", str(workdir / "runs" / "cli_two_cores" / "last.pt"),
                                          "-w", str(workdir), "--segments", "2", "--crops", "1",
                                          "--out", str(tmp_path / "rgb.pkl"), "--no-progress"])
    finally:
        os.sched_setaffinity(0, cores)
    assert trained.exit_code == 0, trained.output
    assert tested.exit_code == 0, tested.output
    assert "workers=auto*" in trained.output
    assert not [w for w in caught if "suggested max number of worker" in str(w.message)]
