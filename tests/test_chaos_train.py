"""Training under a full disk, a kill and a lost best.pt: no checkpoint is named that is not on disk, and a
resumed run (default loader workers included) ends with the weights of an uninterrupted one, bit for bit."""

from __future__ import annotations

import errno
import os
import re
import signal
import subprocess
from pathlib import Path

import pytest
import torch

from chaos import assert_clean_process, assert_one_line_error, invoke
from conftest import run_tsnpipe, tsnpipe_cmd
from tsnpipe.stages.train.checkpoint import load_checkpoint, save_checkpoint
from train_workdir import build_sample_workdir

SMALL = ["--modality", "rgb", "--backbone", "resnet18", "--pretrained", "none", "--segments", "2", "--size", "32",
         "--batch", "3", "--no-progress", "--no-channels-last"]
TINY = [*SMALL, "--workers", "0"]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return build_sample_workdir(tmp_path_factory.getbasetemp() / "train_samples")


def named_checkpoints(output: str) -> list[Path]:
    """The checkpoint paths the closing line of `train` names."""
    line = next(line for line in output.splitlines() if line.startswith("train: ") and "; checkpoints " in line)
    return [Path(part) for part in line.split("checkpoints ", 1)[1].split(", ") if part != "none"]


def full_disk_for(monkeypatch, name: str) -> None:
    """ENOSPC at the fsync of the temp file of `name` (a checkpoint), every other write goes through."""
    real_fsync = os.fsync

    def fsync(fd):
        if os.readlink(f"/proc/self/fd/{fd}").endswith(f".{name}.tmp"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)


def test_full_disk_at_best_pt_leaves_no_last_pt_naming_its_epoch(workdir, monkeypatch):
    args = ["train", "-w", str(workdir), "--run-name", "full_best", "--epochs", "2", *TINY]
    full_disk_for(monkeypatch, "best.pt")
    assert_one_line_error(invoke(*args), "No space left on device", "best.pt")
    monkeypatch.undo()
    run = workdir / "runs" / "full_best"
    assert not (run / "last.pt").exists()  # best.pt goes first: no last.pt names an epoch whose best.pt is lost
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]
    result = invoke(*args)  # space freed: the run starts again and ends with both files
    assert result.exit_code == 0, result.output
    named = named_checkpoints(result.output)
    assert [p.name for p in named] == ["best.pt", "last.pt"] and all(p.is_file() for p in named)


def test_full_disk_at_last_pt_keeps_a_best_pt_the_resume_continues_from(workdir, monkeypatch):
    args = ["train", "-w", str(workdir), "--run-name", "full_last", *TINY]
    assert invoke(*args, "--epochs", "1").exit_code == 0
    full_disk_for(monkeypatch, "last.pt")
    assert_one_line_error(invoke(*args, "--resume", "--epochs", "2"), "No space left on device", "last.pt")
    monkeypatch.undo()
    result = invoke(*args, "--resume", "--epochs", "2")
    assert result.exit_code == 0, result.output
    run = workdir / "runs" / "full_last"
    best_epoch = int(re.search(r"best epoch (\d+)", result.output).group(1))
    assert load_checkpoint(run / "best.pt")["epoch"] == best_epoch
    assert all(p.is_file() for p in named_checkpoints(result.output))


def test_resume_rewrites_a_missing_best_pt_when_last_pt_is_the_best_epoch(workdir):
    args = ["train", "-w", str(workdir), "--run-name", "lost_best", *TINY]
    assert invoke(*args, "--epochs", "1").exit_code == 0
    run = workdir / "runs" / "lost_best"
    (run / "best.pt").unlink()  # as an older tsnpipe left it after a full disk, or a user's rm
    result = invoke(*args, "--resume", "--epochs", "1")
    assert result.exit_code == 0, result.output
    assert f"rewrote {run / 'best.pt'} (epoch 1" in result.output
    assert [p.name for p in named_checkpoints(result.output)] == ["best.pt", "last.pt"]
    best, last = load_checkpoint(run / "best.pt"), load_checkpoint(run / "last.pt")
    assert best["epoch"] == 1
    assert all(torch.equal(tensor, last["model"][key]) for key, tensor in best["model"].items())


def test_resume_says_which_best_epoch_was_lost_and_names_no_missing_file(workdir):
    args = ["train", "-w", str(workdir), "--run-name", "gone_best", *TINY]
    assert invoke(*args, "--epochs", "2").exit_code == 0
    run = workdir / "runs" / "gone_best"
    state = load_checkpoint(run / "last.pt")
    state["best"] = {**state["best"], "epoch": 1, "val_mean_class": 2.0}  # epoch 1 best, its file then lost
    save_checkpoint(run / "last.pt", state)
    (run / "best.pt").unlink()
    result = invoke(*args, "--resume", "--epochs", "2")
    assert result.exit_code == 0, result.output
    assert f"warning: {run / 'best.pt'} does not hold epoch 1" in result.output and "cannot be rebuilt" in result.output
    assert [p.name for p in named_checkpoints(result.output)] == ["last.pt"]
    result = invoke(*args, "--resume", "--epochs", "3")
    assert result.exit_code == 0, result.output
    assert "best epoch 3" in result.output and load_checkpoint(run / "best.pt")["epoch"] == 3


def test_kill_and_resume_with_default_workers_gives_the_weights_of_an_uninterrupted_run(workdir):
    """Default --workers (persistent loader workers): each draw is a function of seed, epoch and video."""
    args = ["train", "-w", str(workdir), *SMALL, "--epochs", "3"]
    straight = run_tsnpipe(*args, "--run-name", "workers_straight", timeout=600)
    assert_clean_process(straight, 0)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(tsnpipe_cmd(*args, "--run-name", "workers_killed"), stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, env=env)
    for line in proc.stdout:
        if line.startswith("epoch 2/3"):
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=60)
    proc.stdout.close()
    run = workdir / "runs" / "workers_killed"
    assert load_checkpoint(run / "last.pt")["epoch"] == 2
    resumed = run_tsnpipe(*args, "--run-name", "workers_killed", "--resume", timeout=600)
    assert_clean_process(resumed, 0)
    assert "resuming" in resumed.stdout and "epoch 3/3" in resumed.stdout
    assert "workers=" in resumed.stdout and "workers=0" not in resumed.stdout
    def epoch_3_loss(output):  # "epoch 3/3: train loss 1.2345 top-1 0.333" (the speed after it varies)
        return next(line for line in output.splitlines() if line.startswith("epoch 3/3")).split(", ")[0]

    assert epoch_3_loss(resumed.stdout) == epoch_3_loss(straight.stdout)
    a, b = load_checkpoint(workdir / "runs" / "workers_straight" / "last.pt"), load_checkpoint(run / "last.pt")
    for key, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][key]), key
