"""The messages a new user meets first: one line naming the file and the fix, exit code 1, nothing left behind."""

import json
import shutil

from click.testing import CliRunner

from conftest import SAMPLES
from tsnpipe.cli import main
from tsnpipe.cmd_predict import frames_for
from tsnpipe.stages.train.recipe import TrainParams


def one_line_error(result) -> str:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    return lines[0]


def test_empty_video_folder_is_an_error_that_says_where_to_point(tmp_path):
    (tmp_path / "videos").mkdir()
    message = one_line_error(CliRunner().invoke(main, ["extract-frames", str(tmp_path / "videos"), "-w",
                                                       str(tmp_path / "W")]))
    assert f"{tmp_path / 'videos'} is empty" in message and "class folders of videos" in message
    assert not (tmp_path / "W").exists()


def test_folder_without_videos_says_how_many_files_it_holds(tmp_path):
    (tmp_path / "videos" / "wave").mkdir(parents=True)
    (tmp_path / "videos" / "wave" / "notes.txt").write_text("not a video\n")
    message = one_line_error(CliRunner().invoke(main, ["extract-frames", str(tmp_path / "videos"), "-w",
                                                       str(tmp_path / "W")]))
    assert "holds 1 file but no video" in message and ".avi" in message


def test_build_splits_before_extract_frames_creates_no_workdir(tmp_path):
    workdir = tmp_path / "W"
    message = one_line_error(CliRunner().invoke(main, ["build-splits", "-w", str(workdir), "--folders"]))
    assert f"There is no workdir {workdir}" in message and "tsnpipe extract-frames VIDEO_DIR" in message
    assert "parquet" not in message
    assert not workdir.exists()


def test_build_splits_in_a_workdir_without_frames_leaves_no_lock(tmp_path):
    workdir = tmp_path / "W"
    workdir.mkdir()
    message = one_line_error(CliRunner().invoke(main, ["build-splits", "-w", str(workdir), "--folders"]))
    assert f"{workdir} has no frames yet" in message
    assert list(workdir.iterdir()) == []


def _fake_runs(workdir):
    for name in ("rgb-1a2b3c4d", "flow-5e6f7a8b"):
        (workdir / "runs" / name).mkdir(parents=True)
        (workdir / "runs" / name / "best.pt").write_bytes(b"")


def test_test_with_a_wrong_checkpoint_path_lists_the_runs_there(tmp_path):
    workdir = tmp_path / "W"
    _fake_runs(workdir)
    message = one_line_error(CliRunner().invoke(main, ["test", "--checkpoint", str(workdir / "runs" / "rgb" / "best.pt"),
                                                       "-w", str(workdir)]))
    assert f"There is no checkpoint {workdir / 'runs' / 'rgb' / 'best.pt'}" in message
    assert str(workdir / "runs" / "rgb-1a2b3c4d" / "best.pt") in message
    assert str(workdir / "runs" / "flow-5e6f7a8b" / "best.pt") in message


def test_wrong_checkpoint_path_outside_the_workdir_finds_the_workdirs_runs(tmp_path, monkeypatch):
    workdir = tmp_path / "W"
    _fake_runs(workdir)
    monkeypatch.chdir(tmp_path)
    message = one_line_error(CliRunner().invoke(main, ["test", "--checkpoint", "runs/rgb/best.pt", "-w", "W"]))
    assert "W/runs/rgb-1a2b3c4d/best.pt" in message


def test_wrong_checkpoint_path_with_no_runs_says_what_to_give(tmp_path):
    message = one_line_error(CliRunner().invoke(main, ["test", "--checkpoint", str(tmp_path / "best.pt"), "-w",
                                                       str(tmp_path / "W")]))
    assert "written by `tsnpipe train`" in message


def test_predict_decodes_with_the_decode_error_rule_the_workdir_recorded(tmp_path):
    workdir = tmp_path / "W"
    (workdir / "manifests").mkdir(parents=True)
    (workdir / "manifests" / "frames.run.json").write_text(json.dumps(
        {"params": {"fps": 10.0, "short_side": 256, "size": None, "on_decode_error": "fail"}}))
    params = TrainParams(split_dir=str(workdir / "splits" / "ucf101" / "split1"), store=str(workdir / "stores" / "x.lmdb"))
    frames, note = frames_for(params, None, None)
    assert frames.on_decode_error == "fail" and "frames.run.json" in note


def test_frames_of_a_real_video_folder_still_extract(tmp_path):
    videos = tmp_path / "videos" / "wave"
    videos.mkdir(parents=True)
    shutil.copy2(SAMPLES / "wave" / "TrumanShow_wave_f_nm_np1_fr_med_26.avi", videos)
    result = CliRunner().invoke(main, ["extract-frames", str(tmp_path / "videos"), "-w", str(tmp_path / "W"),
                                       "--size", "32", "--jobs", "1", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "1 extracted, 0 up to date, 0 failed" in result.output
