"""What status says after kills, touches and lost tables; --repair; names with spaces or newlines; files
from elsewhere (pickled weights) and the modes of the files tsnpipe writes."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from chaos import FRAMES, assert_clean_process, assert_one_line_error, extracted, invoke, tree  # noqa: F401
from conftest import SAMPLES, run_tsnpipe
from tsnpipe.manifests.table import Manifest, manifest_path


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

    from tsnpipe.stages.scores.report import plot_curves, write_report
    from tsnpipe.stages.scores.files import write_scores

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


# ---- status says what the next run will do -----------------------------------------------------------

def test_status_counts_the_videos_a_killed_pack_left_undone(extracted, monkeypatch):
    from tsnpipe.stages.store import pack as pack_stage

    real_read, calls = pack_stage.read_video, {"n": 0}

    def killed_at_the_second_video(workdir, video_id, *args):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real_read(workdir, video_id, *args)

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

    from tsnpipe.stages.scores.files import write_scores
    from tsnpipe.stages.train.logs import write_metrics

    assert invoke("pack", "-w", str(extracted), "--format", "hdf5", "--no-progress").exit_code == 0
    # one clip a class: split the clips as groups of their own across classes, so both sides have videos
    assert invoke("build-splits", "-w", str(extracted), "--folders", "--ratio", "0.5", "--group-scope", "all",
                  "--group-regex", "^(.)").exit_code == 0
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


def test_repair_rebuilds_lost_png_flow_rows_with_their_format(extracted):
    flow = ("extract-flow", "-w", str(extracted), "--backend", "opencv", "--format", "png", "-j", "1", "--no-progress")
    assert invoke(*flow).exit_code == 0
    before = Manifest(extracted, "flow").rows
    manifest_path(extracted, "flow").unlink()
    repaired = invoke("status", "-w", str(extracted), "--repair")
    assert repaired.exit_code == 0 and "flow: 3 rows rebuilt" in repaired.output, repaired.output
    rows = Manifest(extracted, "flow").rows
    assert {vid: (row["pairs"], row["image_format"], row["pairs_of"]) for vid, row in rows.items()} == {
        vid: (row["pairs"], "png", "frames") for vid, row in before.items()}
    assert "0 computed, 3 up to date" in invoke(*flow).output


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
    from tsnpipe.stages.scores.files import read_scores

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
