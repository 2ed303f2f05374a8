"""SIGTERM (Slurm, Kubernetes, `timeout`) is handled as Ctrl-C: one line, exit code 143, the lock released,
worker processes stopped, no temp file left; and a run name trains in one process at a time."""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from chaos import (FRAMES, assert_clean_process, assert_one_line_error, clean_run, extracted,  # noqa: F401
                   invoke, tree)
from conftest import run_tsnpipe, tsnpipe_cmd
from tsnpipe.manifests.table import journal_path
from train_workdir import build_sample_workdir

SMALL = ["--modality", "rgb", "--backbone", "resnet18", "--pretrained", "none", "--segments", "2", "--size", "32",
         "--batch", "3", "--no-progress", "--no-channels-last"]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return build_sample_workdir(tmp_path_factory.getbasetemp() / "train_samples")


def wait_for(condition, seconds: float = 120) -> None:
    deadline = time.time() + seconds
    while not condition():
        assert time.time() < deadline, "timed out"
        time.sleep(0.02)


def terminate(proc: subprocess.Popen, children: list[psutil.Process]) -> str:
    """SIGTERM the process, wait for it, and return its stderr; its workers must be gone within 10 s."""
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    gone, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, [p.cmdline() for p in alive if p.is_running()]
    return stderr


def assert_unlocked(lock: Path) -> None:
    with open(lock, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)  # raises BlockingIOError while anyone holds it


def test_sigterm_stops_extract_frames_and_its_workers_in_one_line(clips, tmp_path, clean_run):
    workdir = tmp_path / "w"
    proc = subprocess.Popen(tsnpipe_cmd("extract-frames", str(clips), "-w", str(workdir), "--fps", "10", "--size", "32",
                                        "-j", "2", "--no-progress"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    journal = journal_path(workdir, "frames")
    wait_for(lambda: journal.exists() and journal.read_bytes().count(b"\n") >= 1)
    children = psutil.Process(proc.pid).children(recursive=True)
    assert children  # the loky workers
    stderr = terminate(proc, children)
    assert proc.returncode == 143, stderr
    assert stderr.splitlines() == ["Stopped by SIGTERM; finished work is kept: run the command again to continue."]
    assert_unlocked(workdir / ".tsnpipe.lock")
    assert not list((workdir / "manifests").glob("*.tmp-*"))
    assert not [p for p in (workdir / "frames").rglob("*") if ".tmp-" in p.name]  # the videos in flight too
    rerun = run_tsnpipe("extract-frames", str(clips), "-w", str(workdir), *FRAMES)
    assert_clean_process(rerun, 0)
    assert tree(workdir, "frames") == clean_run


def test_sigterm_stops_train_and_its_loader_workers_and_the_run_resumes(workdir):
    run = workdir / "runs" / "sigterm"
    proc = subprocess.Popen(tsnpipe_cmd("train", "-w", str(workdir), *SMALL, "--epochs", "30", "--run-name", "sigterm"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    for line in proc.stdout:  # after epoch 1's checkpoints, while epoch 2 trains (its curves and metrics follow)
        if line.startswith("epoch 1/30"):
            break
    children = psutil.Process(proc.pid).children(recursive=True)
    assert children  # the persistent DataLoader workers
    time.sleep(0.3)
    stderr = terminate(proc, children)
    assert proc.returncode == 143, stderr
    assert stderr.splitlines() == ["Stopped by SIGTERM; finished work is kept: run the command again to continue."]
    assert not [p.name for p in run.iterdir() if p.name.endswith(".tmp")]
    assert_unlocked(run / ".tsnpipe.lock")
    resumed = run_tsnpipe("train", "-w", str(workdir), "--modality", "rgb", "--run-name", "sigterm", "--resume", "--epochs", "2",
                          "--no-progress",
                          timeout=600)
    assert_clean_process(resumed, 0)


def test_a_second_training_on_one_run_name_is_refused_in_one_line(workdir):
    run = workdir / "runs" / "twice"
    proc = subprocess.Popen(tsnpipe_cmd("train", "-w", str(workdir), *SMALL, "--epochs", "30", "--workers", "0",
                                        "--run-name", "twice"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        lock = run / ".tsnpipe.lock"
        wait_for(lambda: lock.exists() and f"pid {proc.pid}" in lock.read_text())
        second = invoke("train", "-w", str(workdir), *SMALL, "--epochs", "1", "--workers", "0", "--run-name", "twice")
        assert_one_line_error(second, str(run), f"pid {proc.pid}", "wait for that run to finish")
        resume = invoke("train", "-w", str(workdir), "--modality", "rgb", "--run-name", "twice", "--resume", "--epochs", "1")
        assert_one_line_error(resume, str(run), "in use by")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=120)
    assert proc.returncode == 143


def test_a_second_workdir_packing_into_a_shared_store_is_refused_in_one_line(extracted, tmp_path):
    from tsnpipe.cmd_pack import store_lock

    other = tmp_path / "other"
    shutil.copytree(extracted, other)
    store = tmp_path / "shared" / "frames.hdf5"
    assert invoke("pack", "-w", str(extracted), "--format", "hdf5", "--store", str(store), "--no-progress").exit_code == 0
    before = tree(store)
    with store_lock(store, f"tsnpipe pack --format hdf5 -w {extracted}"):  # the first workdir is packing now
        result = invoke("pack", "-w", str(other), "--format", "hdf5", "--store", str(store), "--no-progress")
        assert_one_line_error(result, f"The store {store} is being written by pid {os.getpid()}", str(extracted))
    assert tree(store) == before
    assert invoke("pack", "-w", str(other), "--format", "hdf5", "--store", str(store), "--no-progress").exit_code == 0


def test_a_flow_run_killed_before_its_first_row_is_listed_by_status(extracted):
    run_info = extracted / "manifests" / "flow.run.json"
    proc = subprocess.Popen(tsnpipe_cmd("extract-flow", "-w", str(extracted), "--backend", "opencv", "-j", "1",
                                        "--no-progress"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(run_info.exists, 60)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    status = run_tsnpipe("status", "-w", str(extracted))
    assert_clean_process(status, 0)
    flow = [line for line in status.stdout.splitlines() if line.startswith("flow ")]
    assert len(flow) == 1 and "needs work: 3 new" in flow[0], status.stdout
