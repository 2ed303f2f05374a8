"""Hostile round three: hangs on dead workers and odd files, run names that escape, damaged derived outputs,
temps after SIGTERM, and the smaller traps. Real files, real signals, real limits; each case ends in one
sentence (or a failed row) and never waits for ever."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from chaos import (FRAMES, assert_clean_process, assert_one_line_error, extracted,  # noqa: F401
                   file_size_limit, invoke)
from conftest import SAMPLES, run_tsnpipe, tsnpipe_cmd
from tsnpipe.manifests.table import Manifest
from tsnpipe.stages.train.checkpoint import load_checkpoint, save_checkpoint
from train_workdir import build_sample_workdir

TRAIN = ["--backbone", "resnet18", "--pretrained", "none", "--segments", "2", "--size", "32", "--batch", "3",
         "--no-progress", "--no-channels-last", "--workers", "0"]


@pytest.fixture(scope="module")
def backbone_weights(tmp_path_factory):
    """A ResNet-18 state dict saved here, so extract-features needs no download."""
    import torch
    import torchvision

    path = tmp_path_factory.mktemp("weights") / "resnet18.pth"
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18().state_dict(), path)
    return path


def features_args(workdir, weights, *more):
    return ("extract-features", "-w", str(workdir), "--name", "f", "--backbone", "resnet18", "--pretrained",
            str(weights), "--every", "100", "--no-progress", *more)


# ---- hangs ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("fmt", "workers"), [("hdf5", "1"), ("npy", "0")])
def test_extract_features_under_a_file_size_limit_ends_in_one_line(extracted, backbone_weights, fmt, workers):
    """A loader worker that cannot put its pictures in shared memory (`ulimit -f`) used to leave the main process
    waiting for ever; a write of the features past the limit printed h5py's tracebacks."""
    args = features_args(extracted, backbone_weights, "--format", fmt, "--workers", workers)
    proc = subprocess.run(tsnpipe_cmd(*args), capture_output=True, text=True, timeout=120,
                          preexec_fn=file_size_limit(1024))
    assert_clean_process(proc, 1)
    assert proc.stderr.startswith("Error: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert ("ulimit -f" in proc.stderr) if workers == "1" else ("File too large" in proc.stderr), proc.stderr
    rerun = run_tsnpipe(*args, timeout=120)
    assert_clean_process(rerun, 0)
    assert "3 extracted, 0 up to date, 0 failed" in rerun.stdout


def test_train_under_a_file_size_limit_ends_in_one_line(train_workdir):
    """The loader worker's shared memory could not grow: a traceback through default_collate."""
    args = ("train", "-w", str(train_workdir), "--modality", "rgb", "--run-name", "limited", "--epochs", "1",
            *TRAIN[:-1], "1")
    proc = subprocess.run(tsnpipe_cmd(*args), capture_output=True, text=True, timeout=180,
                          preexec_fn=file_size_limit(1024))
    assert_clean_process(proc, 1)
    assert proc.stderr.startswith("Error: A picture-reading worker process failed") and "ulimit -f" in proc.stderr \
        and proc.stderr.count("\n") == 1, proc.stderr


def test_the_video_walk_follows_no_folder_link_and_reads_no_fifo(clips, tmp_path):
    """`ln -s .. up` found every clip again through the link (41 times), a loop walked for minutes, and a FIFO or
    a link to /dev/zero named like a video was read for ever."""
    (clips / "wave" / "up").symlink_to("..")
    (clips / "wave" / "loop").symlink_to(clips / "wave")
    outside = tmp_path / "outside"
    outside.mkdir()
    (clips / "elsewhere").symlink_to(outside)
    os.mkfifo(clips / "wave" / "fifo.mp4")
    (clips / "wave" / "zero.mp4").symlink_to("/dev/zero")
    workdir = tmp_path / "w"
    proc = run_tsnpipe("extract-frames", str(clips), "-w", str(workdir), *FRAMES, timeout=60)
    assert_clean_process(proc, 0)
    assert "3 extracted, 0 up to date, 0 failed" in proc.stdout
    assert proc.stderr.startswith("warning: skipped 5 names under") and proc.stderr.count("\n") == 1, proc.stderr
    assert sorted(Manifest(workdir, "frames").rows) == [
        "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01", "cartwheel/Turnk_r_Pippi_Michel_cartwheel_f_cm_np2_le_med_6",
        "wave/RATRACE_wave_f_nm_np1_fr_goo_37"]


def test_a_file_name_that_is_not_utf8_is_named_and_the_good_videos_are_extracted(clips, tmp_path):
    """Such a name raised UnicodeEncodeError on every run, and a good video waiting behind it was never done."""
    source = clips / "wave" / "RATRACE_wave_f_nm_np1_fr_goo_37.avi"
    with open(os.path.join(os.fsencode(clips / "wave"), b"caf\xe9.avi"), "wb") as handle:
        handle.write(source.read_bytes())
    workdir = tmp_path / "w"
    for _ in range(2):
        proc = run_tsnpipe("extract-frames", str(clips), "-w", str(workdir), *FRAMES)
        assert_clean_process(proc, 0)
        assert "not UTF-8" in proc.stderr and "caf\\udce9.avi" in proc.stderr and proc.stderr.count("\n") == 1
    assert "0 extracted, 3 up to date, 0 failed" in proc.stdout


# ---- training runs ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def train_workdir(tmp_path_factory):
    return build_sample_workdir(tmp_path_factory.getbasetemp() / "train_samples")


@pytest.mark.parametrize("name", ["..", "../../x", "/tmp/elsewhere", "a/b", ".hidden", "x" * 201])
def test_a_run_name_is_a_plain_name(train_workdir, name):
    """`--run-name ..` wrote best.pt, last.pt, metrics.csv and tensorboard/ into the workdir itself."""
    before = sorted(p.name for p in train_workdir.iterdir())
    result = invoke("train", "-w", str(train_workdir), "--modality", "rgb", "--run-name", name, "--epochs", "1", *TRAIN)
    assert result.exit_code == 2 and "is not a plain run name" in result.output, result.output
    assert sorted(p.name for p in train_workdir.iterdir()) == before
    assert not (train_workdir / "best.pt").exists() and not os.path.exists("/tmp/elsewhere/last.pt")


def test_resume_takes_the_modality_from_the_checkpoint_and_names_no_lost_best_epoch(train_workdir):
    """`--resume` asked for --modality again; a run whose best.pt was lost closed on "best epoch None ... nan"."""
    run = train_workdir / "runs" / "resumed_rgb"
    assert invoke("train", "-w", str(train_workdir), "--modality", "rgb", "--run-name", run.name, "--epochs", "1",
                  *TRAIN).exit_code == 0
    state = load_checkpoint(run / "last.pt")
    state["best"] = {**state["best"], "epoch": 0, "val_mean_class": 2.0}  # a best epoch whose file was then lost
    save_checkpoint(run / "last.pt", state)
    (run / "best.pt").unlink()
    for leftover in (".curves.png.k3x_9q.tmp", ".last.pt.tmp", ".metrics.csv.tmp"):  # what a SIGKILL leaves
        (run / leftover).write_bytes(b"half")
    (run / ".notes.tmp").write_text("a user's file")
    result = invoke("train", "-w", str(train_workdir), "--run-name", run.name, "--resume", "--epochs", "1", *TRAIN)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in run.iterdir() if p.name.endswith(".tmp")) == [".notes.tmp"]
    assert "None" not in result.output and "nan" not in result.output, result.output
    assert "train: no best epoch on disk" in result.output and f"checkpoints {run / 'last.pt'}" in result.output
    missing = invoke("train", "-w", str(train_workdir), "--resume", "--epochs", "1", *TRAIN)
    assert missing.exit_code == 2 and "Missing option '--modality'" in missing.output


# ---- SIGTERM and SIGKILL leave no temps --------------------------------------------------------------------------

UNDER_SIGTERM = """
import signal, sys
import numpy as np
from tsnpipe.cli import _raise_terminated
signal.signal(signal.SIGTERM, _raise_terminated)
try:
    if sys.argv[2] == "checkpoint":
        import torch
        from tsnpipe.stages.train.checkpoint import save_checkpoint
        save_checkpoint(sys.argv[1], {"model": {"w": torch.ones(60_000_000)}})
    else:
        from tsnpipe.stages.store.hdf5_writer import Shard
        shard = Shard("shard-00001.h5")
        shard.file.create_dataset("images", data=np.ones(240_000_000, dtype=np.uint8))
        shard.save(__import__("pathlib").Path(sys.argv[1]))
except KeyboardInterrupt:
    print("stopped")
    sys.exit(143)
print("saved")
"""


@pytest.mark.parametrize(("what", "name", "temp"), [("checkpoint", "last.pt", ".last.pt.tmp"),
                                                     ("shard", "shard-00001.h5.tmp", "shard-00001.h5.tmp")])
def test_sigterm_while_a_checkpoint_or_a_shard_is_written_leaves_no_temp(tmp_path, what, name, temp):
    """torch's zip writer turned the SIGTERM raised in its file.write into `RuntimeError: [enforce fail at
    inline_container.cc]`, a traceback instead of the one-line stop; pack --format hdf5 left its shard-*.h5.tmp."""
    import signal
    import sys
    import time

    path = tmp_path / "out" / name
    path.parent.mkdir()
    temp = path.with_name(temp)
    proc = subprocess.Popen([sys.executable, "-c", UNDER_SIGTERM, str(path), what],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while time.time() < deadline and not (temp.exists() and temp.stat().st_size > 0):
        time.sleep(0.001)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert (proc.returncode, out.strip()) == (143, "stopped"), out + err
    assert "Traceback" not in err and "RuntimeError" not in err, err
    assert list(path.parent.iterdir()) == []


# ---- derived outputs carry what made them ------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["hdf5", "npy"])
def test_damaged_features_and_csvs_of_another_bmn_are_redone(extracted, backbone_weights, tmp_path, fmt):
    """A truncated features file was up to date and export-features then died in a traceback; CSVs of --bmn 100
    were kept by an export at --bmn 50 into the same folder."""
    args = features_args(extracted, backbone_weights, "--format", fmt, "--workers", "0")
    assert invoke(*args).exit_code == 0
    video = "wave/RATRACE_wave_f_nm_np1_fr_goo_37"
    victim = next((extracted / "features" / "f" / video).iterdir())
    with open(victim, "r+b") as handle:
        handle.truncate(victim.stat().st_size // 2)
    out = tmp_path / "csv"
    export = invoke("export-features", "f", "-w", str(extracted), "--bmn", "4", "--out", str(out), "--no-progress")
    assert_one_line_error(export, "damaged", video, "extract-features")
    assert "2 CSVs written" in export.output
    rerun = invoke(*args)
    assert rerun.exit_code == 0 and "1 extracted, 2 up to date, 0 failed" in rerun.output, rerun.output
    assert "features were damaged" in rerun.output
    for steps, expect in (("4", "1 CSVs written, 2 up to date"), ("3", "3 CSVs written, 0 up to date"),
                          ("3", "0 CSVs written, 3 up to date")):
        export = invoke("export-features", "f", "-w", str(extracted), "--bmn", steps, "--out", str(out),
                        "--no-progress")
        assert export.exit_code == 0 and expect in export.output, export.output
    assert len((out / f"{video}.csv").read_text().splitlines()) == 1 + 3  # header and --bmn 3 rows
    (out / f"{video}.csv").write_text("f0\n")  # a damaged CSV
    export = invoke("export-features", "f", "-w", str(extracted), "--bmn", "3", "--out", str(out), "--no-progress")
    assert "1 CSVs written, 2 up to date" in export.output
    assert len((out / f"{video}.csv").read_text().splitlines()) == 4


def test_a_one_frame_video_under_a_flow_checkpoint_names_its_one_frame_not_extract_flow(tmp_path):
    """Its failed row pointed at extract-flow, which was up to date: a loop with no way out."""
    from types import SimpleNamespace

    import cv2
    import numpy as np

    from tsnpipe.stages.errors import TsnpipeError
    from tsnpipe.stages.features.inputs import stream_count
    from tsnpipe.stages.store.reader import open_reader

    frames = tmp_path / "w" / "frames" / "a" / "still"
    frames.mkdir(parents=True)
    cv2.imwrite(str(frames / "img_00001.jpg"), np.full((32, 40, 3), 128, np.uint8))
    (tmp_path / "w" / "flow" / "a" / "still").mkdir(parents=True)  # what extract-flow leaves: done, 0 pairs
    with pytest.raises(TsnpipeError) as error:
        stream_count(open_reader(tmp_path / "w"), "a/still", SimpleNamespace(modality="flow"), tmp_path / "w")
    assert "has one frame" in str(error.value) and "extract-flow" not in str(error.value)


# ---- smaller traps -----------------------------------------------------------------------------------------------


def test_max_frames_fails_a_video_whose_timestamps_jump(clips, tmp_path, ffmpeg_exe):
    """A 3 KB mkv whose timestamps jump a minute (an hour in the field: 36,020 frames, 424 MB) became one frame a
    second of the gap without a word."""
    gap = clips / "wave" / "gap.mkv"
    subprocess.run([ffmpeg_exe, "-v", "error", "-f", "lavfi", "-i", "testsrc=size=64x48:rate=10:duration=1", "-vf",
                    "setpts='if(gte(N,5),PTS+60/TB,PTS)'", "-fps_mode", "passthrough", "-c:v", "libx264", str(gap)],
                   check=True)
    workdir = tmp_path / "w"
    capped = run_tsnpipe("extract-frames", str(clips), "-w", str(workdir), *FRAMES, "--max-frames", "30")
    assert_clean_process(capped, 1)
    assert "3 extracted, 0 up to date, 1 failed" in capped.stdout
    row = Manifest(workdir, "frames").rows["wave/gap"]
    assert row["status"] == "failed" and "would give more than --max-frames 30 frames" in row["error"]
    assert not (workdir / "frames" / "wave" / "gap").exists()
    assert not [p for p in (workdir / "frames" / "wave").iterdir() if "tmp" in p.name]
    uncapped = run_tsnpipe("extract-frames", str(clips), "-w", str(workdir / "all"), *FRAMES)
    assert_clean_process(uncapped, 0)
    assert len(list((workdir / "all" / "frames" / "wave" / "gap").iterdir())) == 61
    # without --max-frames the params hash is what older versions wrote: nothing is redone
    assert "0 extracted, 4 up to date" in run_tsnpipe("extract-frames", str(clips), "-w", str(workdir / "all"),
                                                      *FRAMES).stdout


@pytest.fixture(scope="module")
def rgb_checkpoint(train_workdir):
    run = train_workdir / "runs" / "round3_rgb"
    if not (run / "last.pt").is_file():
        result = invoke("train", "-w", str(train_workdir), "--modality", "rgb", "--run-name", run.name, "--epochs", "1",
                        *TRAIN)
        assert result.exit_code == 0, result.output
    return run / "last.pt"


PREDICT = ["--size", "64", "--segments", "2", "--crops", "1", "--device", "cpu", "--json"]


def test_predict_refuses_to_fuse_a_multi_label_with_a_single_label_checkpoint(rgb_checkpoint, tmp_path):
    state = load_checkpoint(rgb_checkpoint)
    state["params"]["multi_label"] = True
    other = tmp_path / "multi.pt"
    save_checkpoint(other, state)
    clip = SAMPLES / "wave" / "TrumanShow_wave_f_nm_np1_fr_med_26.avi"
    result = invoke("predict", str(clip), "--checkpoint", str(rgb_checkpoint), "--checkpoint", str(other), *PREDICT)
    assert_one_line_error(result, "multi-label", "single-label", str(other))


@pytest.mark.parametrize("name", ["pipe:0.mp4", "concat:x.mp4", "file:y.avi"])
def test_predict_reads_a_file_named_like_an_ffmpeg_protocol(rgb_checkpoint, tmp_path, monkeypatch, name):
    """`pipe:0.mp4` was read from stdin and `concat:x.mp4` as a list of files."""
    import shutil

    shutil.copy(SAMPLES / "wave" / "TrumanShow_wave_f_nm_np1_fr_med_26.avi", tmp_path / name)
    monkeypatch.chdir(tmp_path)
    result = invoke("predict", name, "--checkpoint", str(rgb_checkpoint), *PREDICT)
    assert result.exit_code == 0, result.output
    assert '"classes"' in result.output


def test_a_3d_pretrained_file_carrying_objects_gives_no_advice_to_run_its_code(train_workdir, tmp_path):
    import torch

    carrying = tmp_path / "r3d.pt"
    torch.save({"model": {}, "note": ExportNote()}, carrying)
    result = invoke("train", "-w", str(train_workdir), "--modality", "rgb", "--arch", "r3d_18", "--pretrained",
                    str(carrying), "--run-name", "r3d_carrying", "--epochs", "1", "--size", "32", "--clip-len", "4",
                    "--batch", "2", "--workers", "0", "--no-progress")
    message = assert_one_line_error(result, str(carrying), "could run code")
    assert "weights_only" not in message


class ExportNote:
    """An object beyond tensors in a weights file."""


def test_training_on_a_store_lacking_videos_of_the_split_is_one_sentence(clips, tmp_path):
    """Each loader worker failed on the missing video: 25 lines of tracebacks instead of one sentence."""
    import shutil

    workdir = tmp_path / "w"
    assert invoke("extract-frames", str(clips), "-w", str(workdir), *FRAMES).exit_code == 0
    store = tmp_path / "old.hdf5"
    assert invoke("pack", "-w", str(workdir), "--format", "hdf5", "--store", str(store), "--no-progress").exit_code == 0
    shutil.copy(SAMPLES / "wave/TrumanShow_wave_f_nm_np1_fr_med_26.avi", clips / "wave")  # a video the store lacks
    assert invoke("extract-frames", str(clips), "-w", str(workdir), *FRAMES).exit_code == 0
    assert invoke("build-splits", "-w", str(workdir), "--folders", "--ratio", "0.5").exit_code == 0
    args = ("train", "-w", str(workdir), "--modality", "rgb", "--store", str(store), "--epochs", "1", "--run-name", "r",
            "--backbone", "resnet18", "--pretrained", "none", "--segments", "1", "--size", "32", "--batch", "2",
            "--workers", "2", "--no-progress")
    proc = run_tsnpipe(*args, timeout=300)
    assert_clean_process(proc, 1)
    assert proc.stderr.startswith(f"Error: The store {store} lacks 1 of the") and proc.stderr.count("\n") == 1, \
        proc.stderr
    assert "TrumanShow" in proc.stderr


def without_privileges(command: list[str]) -> list[str]:
    """`command` as a process that file modes bind: as root, in a new user namespace (`unshare --user`), where
    root keeps its uid but loses CAP_DAC_OVERRIDE; skipped where that cannot be staged."""
    import shutil

    if os.geteuid() != 0:
        return command
    if not shutil.which("unshare") or subprocess.run(["unshare", "--user", "true"]).returncode != 0:
        pytest.skip("running as root without user namespaces: a folder's mode cannot keep this process out")
    return ["unshare", "--user", *command]


@pytest.mark.parametrize("folder", ["frames/wave", "manifests"])
def test_a_folder_this_user_cannot_read_is_one_sentence(extracted, folder):
    """An unreadable frames folder was a PermissionError from the temp sweep; an unreadable manifests/ (another
    user's, 0700) made status say "no stage has run yet"."""
    locked = extracted / folder
    locked.chmod(0)
    try:
        command = ("extract-frames", str(extracted.parent / "videos"), "-w", str(extracted), *FRAMES) \
            if folder.startswith("frames") else ("status", "-w", str(extracted))
        proc = subprocess.run(without_privileges(tsnpipe_cmd(*command)), capture_output=True, text=True, timeout=120)
    finally:
        locked.chmod(0o755)
    assert_clean_process(proc, 1)
    assert proc.stderr.startswith("Error: Cannot ") and str(locked) in proc.stderr and "Permission denied" in \
        proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
    assert "no stage has run" not in proc.stdout


@pytest.mark.parametrize("where", ["under_a_file", "proc"])
def test_an_out_path_that_cannot_hold_a_file_is_one_sentence(train_workdir, rgb_checkpoint, tmp_path, where):
    """`--out` under a regular file or in /proc was a NotADirectoryError or FileNotFoundError traceback, and
    `test` found out only after scoring every video."""
    import numpy as np

    from tsnpipe.stages.scores.files import write_scores

    scores = write_scores(tmp_path / "a.pkl", ["v1", "v2"], np.array([0, 1]), ["a", "b"],
                          np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32), {"segments": 1}, {"checkpoint": "x"})
    plain = tmp_path / "plain.txt"
    plain.write_text("a file, not a folder")
    out = plain / "sub" / "x.pkl" if where == "under_a_file" else Path("/proc/tsnpipe-scores/x.pkl")
    for args in (("fuse", str(scores), str(scores), "--out", str(out)),
                 ("report", str(scores), "--out", str(out.parent)),
                 ("test", "--checkpoint", str(rgb_checkpoint), "-w", str(train_workdir), "--out", str(out),
                  "--workers", "0", "--no-progress")):
        assert_one_line_error(invoke(*args), "Cannot write", str(out.parent))
