"""Kills, full disks, torn and garbled records: every bad state ends in one sentence and exit code 1, a
rerun finishes the work byte-identical to an uninterrupted run, and nothing outside tsnpipe's files moves."""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import SAMPLES, run_tsnpipe, tsnpipe_cmd
from tsnpipe.cli import main
from tsnpipe.manifests.table import Manifest, journal_path, manifest_path

FRAMES = ("--fps", "1", "--size", "32", "-j", "1", "--no-progress")


def tree(root: Path, below: str = "") -> dict[str, str]:
    """Relative path -> sha256 of every file under root/below (what a user would compare)."""
    base = root / below if below else root
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(base.rglob("*")) if p.is_file()}


def invoke(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=True)


def assert_one_line_error(result, *words: str) -> str:
    """Exit code 1, no traceback, a single `Error:` line that says what happened."""
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.output
    assert "Traceback" not in result.output
    for word in words:
        assert word in errors[0], errors[0]
    return errors[0]


def assert_clean_process(proc: subprocess.CompletedProcess, code: int = 1) -> None:
    assert proc.returncode == code, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr


@pytest.fixture()
def clean_run(clips, tmp_path) -> dict[str, str]:
    """The frames of an uninterrupted run: what every interrupted one must end up with."""
    workdir = tmp_path / "clean"
    assert invoke("extract-frames", str(clips), "-w", str(workdir), *FRAMES).exit_code == 0
    return tree(workdir, "frames")


# ---- the journal: torn tails, garbage, damaged tables -------------------------------------------------

def test_torn_tail_is_cut_before_the_next_row_is_appended(tmp_path):
    manifest = Manifest(tmp_path, "frames")
    manifest.record({"video_id": "a", "status": "done"})
    with open(manifest.journal, "ab") as fh:
        fh.write(b'0badc0de {"video_id": "b", "sta')  # a kill or a full disk mid-write
    Manifest(tmp_path, "frames").record({"video_id": "c", "status": "done"})
    with open(manifest.journal, "ab") as fh:
        fh.write(b'{"video_id": "d"')  # interrupted once more
    Manifest(tmp_path, "frames").record({"video_id": "e", "status": "done"})
    assert sorted(Manifest(tmp_path, "frames").rows) == ["a", "c", "e"]


def test_garbled_journal_line_is_set_aside_with_a_warning(tmp_path, capsys):
    manifest = Manifest(tmp_path, "frames")
    for vid in "abc":
        manifest.record({"video_id": vid, "status": "done"})
    data = bytearray(manifest.journal.read_bytes())
    second = data.index(b"\n") + 12
    data[second] ^= 0x01  # one flipped bit inside row b, still valid JSON
    manifest.journal.write_bytes(bytes(data) + b"\xff\xfejunk\n")
    reread = Manifest(tmp_path, "frames")
    assert sorted(reread.rows) == ["a", "c"]
    assert "damaged line(s) (2, 4)" in capsys.readouterr().err
    reread.record({"video_id": "d", "status": "done"})
    aside = list(manifest.journal.parent.glob("frames.journal.jsonl.damaged-*"))
    assert len(aside) == 1 and b"junk" in aside[0].read_bytes()
    assert sorted(Manifest(tmp_path, "frames").rows) == ["a", "c", "d"]


def test_rows_without_checksum_from_older_versions_still_load(tmp_path):
    path = journal_path(tmp_path, "frames")
    path.parent.mkdir(parents=True)
    path.write_text('{"video_id": "a", "status": "done"}\n')
    assert Manifest(tmp_path, "frames").rows["a"]["status"] == "done"


@pytest.mark.parametrize("damage", ["truncate", "garble"])
def test_damaged_table_is_one_sentence_for_every_command(clips, tmp_path, damage):
    workdir = tmp_path / "w"
    assert invoke("extract-frames", str(clips), "-w", str(workdir), *FRAMES).exit_code == 0
    table = manifest_path(workdir, "frames")
    data = table.read_bytes()
    table.write_bytes(data[: len(data) // 2] if damage == "truncate" else data[:200] + b"\x00" * 64 + data[264:])
    for args in (["extract-frames", str(clips)], ["pack", "--format", "hdf5"], ["build-splits", "--folders"]):
        result = invoke(*args, "-w", str(workdir))
        assert_one_line_error(result, str(table), "status --repair")


def test_junk_appended_to_the_journal_is_a_warning_and_the_run_goes_on(clips, tmp_path, clean_run):
    workdir = tmp_path / "w"
    assert invoke("extract-frames", str(clips), "-w", str(workdir), *FRAMES).exit_code == 0
    journal = journal_path(workdir, "frames")
    journal.write_bytes(b"\x89PNG garbage that is not utf-8 \xff\n")
    proc = run_tsnpipe("extract-frames", str(clips), "-w", str(workdir), *FRAMES)
    assert_clean_process(proc, 0)
    assert "warning:" in proc.stderr and "damaged" in proc.stderr
    assert "3 up to date" in proc.stdout
    assert tree(workdir, "frames") == clean_run


# ---- a full disk at any write, a lock that cannot be taken -------------------------------------------

def test_full_disk_at_every_fsync_is_one_sentence_and_the_rerun_completes(clips, tmp_path, clean_run, monkeypatch):
    workdir = tmp_path / "w"
    real_fsync, calls = os.fsync, {"n": 0}
    nth = 1
    while True:
        calls["n"] = 0

        def full_at_nth(fd, nth=nth):
            calls["n"] += 1
            if calls["n"] == nth:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            real_fsync(fd)

        monkeypatch.setattr(os, "fsync", full_at_nth)
        result = invoke("extract-frames", str(clips), "-w", str(workdir), *FRAMES)
        monkeypatch.setattr(os, "fsync", real_fsync)
        if calls["n"] < nth:
            break  # this run wrote everything without reaching the injected failure
        assert_one_line_error(result, "No space left on device")
        nth += 1
    assert nth > 3  # run info, journal rows and the table all were hit
    assert invoke("extract-frames", str(clips), "-w", str(workdir), *FRAMES).exit_code == 0
    assert tree(workdir, "frames") == clean_run
    assert not [p for p in (workdir / "manifests").iterdir() if ".tmp-" in p.name]


def test_full_disk_while_taking_the_lock_is_one_sentence(clips, tmp_path):
    workdir = tmp_path / "w"
    proc = subprocess.run(tsnpipe_cmd("extract-frames", str(clips), "-w", str(workdir), *FRAMES),
                          capture_output=True, text=True, preexec_fn=_file_size_limit(0))
    assert_clean_process(proc, 1)
    assert proc.stderr.startswith(f"Error: Cannot write {workdir / '.tsnpipe.lock'}: File too large; nothing was started")
    assert proc.stderr.count("\n") == 1


def test_lock_file_that_cannot_be_created_is_one_sentence(clips, tmp_path):
    workdir = tmp_path / "w"
    (workdir / ".tsnpipe.lock").mkdir(parents=True)  # a folder where the lock file should be
    result = invoke("extract-frames", str(clips), "-w", str(workdir), *FRAMES)
    assert_one_line_error(result, ".tsnpipe.lock")


# ---- kills -------------------------------------------------------------------------------------------

def test_killed_run_with_torn_journal_reruns_to_the_same_frames(clips, tmp_path, clean_run):
    workdir = tmp_path / "w"
    journal = journal_path(workdir, "frames")
    proc = subprocess.Popen(tsnpipe_cmd("extract-frames", str(clips), "-w", str(workdir), *FRAMES),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline and not (journal.exists() and journal.read_bytes().count(b"\n") >= 1):
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with open(journal, "ab") as fh:
        fh.write(b'12345678 {"video_id": "wave/RA')  # as if the kill had hit mid-line
    outside = tree(clips)
    for _ in range(2):  # the second rerun reads what the first appended after the cut tail
        rerun = run_tsnpipe("extract-frames", str(clips), "-w", str(workdir), *FRAMES)
        assert_clean_process(rerun, 0)
    assert "3 up to date" in rerun.stdout
    assert tree(workdir, "frames") == clean_run
    assert tree(clips) == outside
    status = run_tsnpipe("status", "-w", str(workdir))
    assert_clean_process(status, 0)
    assert "needs work: nothing" in status.stdout


# ---- files from elsewhere ----------------------------------------------------------------------------

class _RunsCode:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("content", ["pickled code", "garbage"])
def test_pretrained_file_that_is_not_a_state_dict_is_one_sentence(tmp_path, content):
    import torch

    from train_workdir import build_sample_workdir

    workdir = build_sample_workdir(tmp_path / "w")
    weights, marker = tmp_path / "evil.pt", tmp_path / "code-ran"
    if content == "pickled code":
        torch.save({"conv1.weight": _RunsCode(marker)}, weights)
    else:
        weights.write_bytes(b"PK\x03\x04 not really a zip")
    result = invoke("train", "-w", str(workdir), "--modality", "rgb", "--run-name", "evil", "--backbone", "resnet18",
                    "--pretrained", str(weights), "--segments", "1", "--size", "32", "--epochs", "1", "--workers", "0",
                    "--no-progress")
    line = assert_one_line_error(result, str(weights), "state_dict")
    assert "weights_only" not in line and not marker.exists()


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_score_files_reports_and_curves_follow_the_umask(tmp_path, umask):
    import numpy as np

    from tsnpipe.stages.report import plot_curves, write_report
    from tsnpipe.stages.scores import write_scores

    before = os.umask(umask)
    try:
        scores = write_scores(tmp_path / "rgb.pkl", ["a/v1", "b/v2"], np.array([0, 1]), ["a", "b"],
                              np.eye(2, dtype=np.float32), {"modality": "rgb"}, {"checkpoint": "x"})
        report = write_report(scores)
        metrics = tmp_path / "metrics.csv"
        metrics.write_text("epoch,train_loss,val_loss,train_top1,val_top1,val_mean_class\n1,2.0,2.1,0.1,0.2,0.2\n"
                           "2,1.0,1.5,0.5,0.4,0.4\n")
        plot_curves(metrics, tmp_path / "curves.png")
    finally:
        os.umask(before)
    for path in (scores, report.confusion_png, report.per_class_csv, tmp_path / "curves.png"):
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask, path
    assert not list(tmp_path.glob(".*.tmp"))


# ---- tsnpipe deletes only what it made ---------------------------------------------------------------

@pytest.fixture()
def extracted(clips, tmp_path) -> Path:
    workdir = tmp_path / "w"
    assert invoke("extract-frames", str(clips), "-w", str(workdir), *FRAMES).exit_code == 0
    return workdir


@pytest.mark.parametrize(("fmt", "theirs"), [("hdf5", "x.tmp"), ("hdf5", "shard-00007.h5"), ("lmdb", "notes.txt")])
def test_pack_refuses_a_store_folder_holding_files_it_did_not_write(extracted, tmp_path, fmt, theirs):
    store = tmp_path / "mine"
    store.mkdir()
    (store / theirs).write_bytes(b"the user's own file")
    result = invoke("pack", "-w", str(extracted), "--format", fmt, "--store", str(store), "--no-progress")
    assert_one_line_error(result, str(store), theirs, "did not write")
    assert sorted(p.name for p in store.iterdir()) == [theirs]
    assert (store / theirs).read_bytes() == b"the user's own file"


def test_a_users_file_dropped_into_a_packed_store_is_never_deleted(extracted):
    assert invoke("pack", "-w", str(extracted), "--format", "hdf5", "--no-progress").exit_code == 0
    store = extracted / "stores" / "frames.hdf5"
    (store / "x.tmp").write_bytes(b"mine")
    result = invoke("pack", "-w", str(extracted), "--format", "hdf5", "--no-progress")
    assert_one_line_error(result, "x.tmp")
    assert (store / "x.tmp").read_bytes() == b"mine"


def test_shard_renamed_but_not_yet_indexed_is_swept_as_tsnpipes_own(extracted, monkeypatch):
    from tsnpipe.stages import pack_hdf5
    from tsnpipe.stages.store import open_reader

    real_write_index = pack_hdf5._write_index

    def killed_right_after_the_rename(store_path, index):
        real_write_index(store_path, index)
        if index.get("pending"):  # the index names the shard as pending: rename it, then die
            os.replace(store_path / f"{index['pending'][0]}.tmp", store_path / index["pending"][0])
            raise KeyboardInterrupt

    store = extracted / "stores" / "frames.hdf5"
    monkeypatch.setattr(pack_hdf5, "_write_index", killed_right_after_the_rename)
    result = invoke("pack", "-w", str(extracted), "--format", "hdf5", "--no-progress")
    assert result.exit_code == 1 and "Aborted" in result.output
    monkeypatch.undo()
    assert sorted(p.name for p in store.iterdir()) == ["index.json", "shard-00001.h5"]
    result = invoke("pack", "-w", str(extracted), "--format", "hdf5", "--no-progress")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in store.iterdir()) == ["index.json", "shard-00002.h5"]
    assert len(open_reader(store).video_ids()) == 3


# ---- status says what the next run will do -----------------------------------------------------------

def test_status_counts_the_videos_a_killed_pack_left_undone(extracted, monkeypatch):
    from tsnpipe.stages import pack as pack_stage

    real_read, calls = pack_stage.read_video, {"n": 0}

    def killed_at_the_second_video(workdir, video_id):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real_read(workdir, video_id)

    monkeypatch.setattr(pack_stage, "read_video", killed_at_the_second_video)
    assert invoke("pack", "-w", str(extracted), "--format", "lmdb", "--no-progress").exit_code == 1
    monkeypatch.undo()
    status = invoke("status", "-w", str(extracted))
    assert status.exit_code == 0, status.output
    assert "pack-lmdb        1 up to date; needs work: 2 new" in status.output
    assert invoke("pack", "-w", str(extracted), "--format", "lmdb", "--no-progress").output.count("2 packed, 1 up")


def test_touched_but_same_video_is_not_reported_and_its_mtime_is_recorded(extracted, clips, monkeypatch):
    from tsnpipe import runner

    video = next(clips.rglob("*.avi"))
    os.utime(video, ns=(time.time_ns(), time.time_ns() + 10**9))
    status = invoke("status", "-w", str(extracted))
    assert "frames           3 up to date; needs work: nothing" in status.output, status.output
    result = invoke("extract-frames", str(clips), "-w", str(extracted), *FRAMES)
    assert "0 extracted, 3 up to date" in result.output
    hashed = []
    monkeypatch.setattr(runner, "content_hash", lambda path: hashed.append(path) or "x")
    result = invoke("extract-frames", str(clips), "-w", str(extracted), *FRAMES)
    assert "0 extracted, 3 up to date" in result.output and hashed == []  # the new mtime was recorded
    assert "needs work: nothing" in invoke("status", "-w", str(extracted)).output


def test_status_follows_the_chain_through_splits_runs_and_scores(extracted, clips):
    import json

    import numpy as np

    from tsnpipe.stages.scores import write_scores
    from tsnpipe.stages.train.logs import write_metrics

    assert invoke("pack", "-w", str(extracted), "--format", "hdf5", "--no-progress").exit_code == 0
    assert invoke("build-splits", "-w", str(extracted), "--folders", "--ratio", "0.5").exit_code == 0
    metrics = [{"epoch": e, "lr": 0.001, "train_loss": 1.0, "train_top1": 0.5, "val_loss": 1.0, "val_top1": acc,
                "val_mean_class": acc, "clips_per_s": 1.0, "seconds": 1.0} for e, acc in ((1, 0.25), (2, 0.75), (3, 0.5))]
    (extracted / "runs" / "rgb").mkdir(parents=True)
    write_metrics(extracted / "runs" / "rgb" / "metrics.csv", metrics)
    scores = write_scores(extracted / "scores" / "rgb.pkl", ["a"], np.array([0]), ["x"], np.ones((1, 1)),
                          {"modality": "rgb"}, {})
    scores.with_suffix(".json").write_text(json.dumps({"videos": 1, "top1": 1.0, "top5": 1.0, "mean_class": 1.0}))
    output = invoke("status", "-w", str(extracted)).output
    order = [output.index(word) for word in ("frames ", "pack-hdf5", "splits/folders/split1", "runs/rgb", "scores/rgb.pkl")]
    assert order == sorted(order), output
    assert "splits/folders/split1: " in output and "; up to date" in output
    assert "runs/rgb: 3 epochs done, best validation mean class 0.7500 (epoch 2)" in output
    assert "scores/rgb.pkl: 1 videos, top-1 1.0000, top-5 1.0000, mean class 1.0000" in output
    shutil.copy(SAMPLES / "wave/TrumanShow_wave_f_nm_np1_fr_med_26.avi",  # 1.6 s instead of 2.4 s
                clips / "wave/RATRACE_wave_f_nm_np1_fr_goo_37.avi")
    assert invoke("extract-frames", str(clips), "-w", str(extracted), *FRAMES).exit_code == 0
    output = invoke("status", "-w", str(extracted)).output
    assert "pack-hdf5        2 up to date; needs work: 1 input changed" in output
    assert "build-splits would rewrite it (1 videos re-extracted" in output


# ---- repair ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("loss", ["deleted", "truncated"])
def test_repair_rebuilds_lost_rows_from_the_outputs_so_nothing_is_redone(extracted, clips, loss):
    assert invoke("pack", "-w", str(extracted), "--format", "hdf5", "--no-progress").exit_code == 0
    frames_before = tree(extracted, "frames")
    for stage in ("frames", "pack-hdf5"):
        table = manifest_path(extracted, stage)
        if loss == "deleted":
            table.unlink()
        else:
            table.write_bytes(table.read_bytes()[:100])
    if loss == "truncated":
        assert_one_line_error(invoke("status", "-w", str(extracted)), "--repair")
    repaired = invoke("status", "-w", str(extracted), "--repair")
    assert repaired.exit_code == 0, repaired.output
    assert "frames: 3 rows rebuilt" in repaired.output and "pack-hdf5: 3 rows rebuilt" in repaired.output
    assert "needs work: nothing" in repaired.output and "needs work: 3" not in repaired.output
    assert len(list((extracted / "manifests").glob("*.damaged-*"))) == (2 if loss == "truncated" else 0)
    assert "0 extracted, 3 up to date" in invoke("extract-frames", str(clips), "-w", str(extracted), *FRAMES).output
    assert "0 packed, 3 up to date" in invoke("pack", "-w", str(extracted), "--format", "hdf5", "--no-progress").output
    assert tree(extracted, "frames") == frames_before


# ---- names that break nothing ------------------------------------------------------------------------

def test_a_name_with_a_space_goes_through_every_stage(clips, tmp_path):
    spaced = clips / "wave" / "my clip.avi"
    (clips / "wave" / "RATRACE_wave_f_nm_np1_fr_goo_37.avi").rename(spaced)
    shutil.copy(SAMPLES / "wave/TrumanShow_wave_f_nm_np1_fr_med_26.avi", clips / "wave")  # so the test side has one
    workdir = tmp_path / "w"
    assert invoke("extract-frames", str(clips), "-w", str(workdir), *FRAMES).exit_code == 0
    flow = invoke("extract-flow", "-w", str(workdir), "--backend", "opencv", "-j", "1", "--no-progress")
    assert flow.exit_code == 0, flow.output
    assert (workdir / "flow" / "wave" / "my clip" / "flow_x_00001.jpg").is_file()
    for fmt in ("lmdb", "hdf5"):
        assert invoke("pack", "-w", str(workdir), "--format", fmt, "--no-progress").exit_code == 0
    proc = run_tsnpipe("build-splits", "-w", str(workdir), "--folders", "--ratio", "0.5")
    assert_clean_process(proc, 0)
    assert "warning:" in proc.stderr and "'wave/my clip'" in proc.stderr
    split = workdir / "splits" / "folders" / "split1"
    lists = [(split / f"{s}_{m}.txt").read_text() for s in ("train", "test") for m in ("rgb", "flow")]
    assert all(len(line.split()) == 3 for text in lists for line in text.splitlines())
    assert "my clip" not in "".join(lists)
    assert "wave/my clip\tname holds whitespace" in (split / "missing.txt").read_text()
    assert "wave/my clip" in (split / "train.csv").read_text() + (split / "test.csv").read_text()
    status = run_tsnpipe("status", "-w", str(workdir))
    assert_clean_process(status, 0)
    assert status.stdout.count("needs work: nothing") == 4, status.stdout
    assert "splits/folders/split1: 3 train, 1 test, 1 missing; up to date" in status.stdout
    tiny = ["--backbone", "resnet18", "--pretrained", "none", "--segments", "1", "--size", "32", "--batch", "2",
            "--workers", "0", "--no-progress", "--no-channels-last"]
    trained = invoke("train", "-w", str(workdir), "--modality", "rgb", "--store", str(workdir / "stores" / "frames.hdf5"),
                     "--epochs", "1", "--run-name", "spaced", *tiny)
    assert trained.exit_code == 0, trained.output
    out = tmp_path / "rgb.pkl"
    tested = invoke("test", "--checkpoint", str(workdir / "runs" / "spaced" / "last.pt"), "-w", str(workdir),
                    "--segments", "1", "--crops", "1", "--workers", "0", "--out", str(out), "--no-progress")
    assert tested.exit_code == 0, tested.output
    from tsnpipe.stages.scores import read_scores

    assert ("wave/my clip" in read_scores(out)["video_ids"]) == ("wave/my clip" in (split / "test.csv").read_text())


def test_a_name_with_a_newline_is_a_failed_row_with_its_reason(clips, tmp_path):
    import shutil as sh

    sh.copy(clips / "wave" / "RATRACE_wave_f_nm_np1_fr_goo_37.avi", clips / "wave" / "bad\nname.avi")
    workdir = tmp_path / "w"
    proc = run_tsnpipe("extract-frames", str(clips), "-w", str(workdir), *FRAMES)
    assert_clean_process(proc, 1)
    assert "3 extracted, 0 up to date, 1 failed" in proc.stdout
    row = Manifest(workdir, "frames").rows["wave/bad\nname"]
    assert row["status"] == "failed" and "control character ('\\n')" in row["error"]
    assert not (workdir / "frames" / "wave" / "bad\nname").exists()
    assert sorted(p.name for p in (workdir / "frames" / "wave").iterdir()) == ["RATRACE_wave_f_nm_np1_fr_goo_37"]


def test_full_disk_at_every_fsync_of_pack_is_one_sentence_and_the_rerun_completes(extracted, tmp_path, monkeypatch):
    from tsnpipe.stages.store import open_reader

    clean = tmp_path / "clean"
    shutil.copytree(extracted, clean)
    assert invoke("pack", "-w", str(clean), "--format", "hdf5", "--shard-mb", "1", "--no-progress").exit_code == 0
    real_fsync, calls, nth = os.fsync, {"n": 0}, 1
    while True:
        calls["n"] = 0

        def full_at_nth(fd, nth=nth):
            calls["n"] += 1
            if calls["n"] == nth:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            real_fsync(fd)

        monkeypatch.setattr(os, "fsync", full_at_nth)
        result = invoke("pack", "-w", str(extracted), "--format", "hdf5", "--shard-mb", "1", "--no-progress")
        monkeypatch.setattr(os, "fsync", real_fsync)
        if calls["n"] < nth:
            break
        assert_one_line_error(result, "No space left on device")
        nth += 1
    assert nth > 3
    store, reference = open_reader(extracted / "stores" / "frames.hdf5"), open_reader(clean / "stores" / "frames.hdf5")
    assert store.video_ids() == reference.video_ids()
    for vid in store.video_ids():
        count = reference.count(vid)
        assert store.frames(vid, range(count), decode=False) == reference.frames(vid, range(count), decode=False)
    assert not [p for p in (extracted / "stores" / "frames.hdf5").iterdir() if p.name.endswith(".tmp")]
    assert "needs work: nothing" in invoke("status", "-w", str(extracted)).output.split("pack-hdf5")[1]


def _file_size_limit(limit: int):
    import resource

    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG) like on a full disk
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_lmdb_store_on_a_disk_that_fills_is_one_sentence_and_the_rerun_completes(extracted):
    args = tsnpipe_cmd("pack", "-w", str(extracted), "--format", "lmdb", "--no-progress")
    proc = subprocess.run(args, capture_output=True, text=True, preexec_fn=_file_size_limit(16384))
    assert_clean_process(proc, 1)
    assert proc.stderr.startswith("Error: Cannot write the LMDB store") and proc.stderr.count("\n") == 1
    assert_clean_process(run_tsnpipe("pack", "-w", str(extracted), "--format", "lmdb", "--no-progress"), 0)
    assert "needs work: nothing" in run_tsnpipe("status", "-w", str(extracted)).stdout.split("pack-lmdb")[1]


def test_pack_refuses_to_start_a_video_the_disk_has_no_room_for(extracted, monkeypatch):
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(1 << 30, (1 << 30) - (1 << 20), 1 << 20))
    result = invoke("pack", "-w", str(extracted), "--format", "hdf5", "--no-progress")
    assert_one_line_error(result, "1.0 MB free", "frames.hdf5")
    monkeypatch.undo()
    assert invoke("pack", "-w", str(extracted), "--format", "hdf5", "--no-progress").exit_code == 0
    assert sorted(p.name for p in (extracted / "stores" / "frames.hdf5").iterdir()) == ["index.json", "shard-00001.h5"]
