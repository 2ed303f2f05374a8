"""`tsnpipe build-splits` through Click and as a real process, on frames extracted from the sample clips."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import run_tsnpipe
from packing_data import extracted_workdir
from tsnpipe.cli import main
from tsnpipe.cmd_splits import UCF101_GROUP
from tsnpipe.stages.splits.folders import DEFAULT_GROUP_REGEX

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def extracted(tmp_path_factory):
    return extracted_workdir(tmp_path_factory.mktemp("splits_cli") / "W")


@pytest.fixture
def workdir(extracted, tmp_path):
    shutil.copytree(extracted, tmp_path / "W")
    return tmp_path / "W"


def build(workdir, *args):
    return CliRunner().invoke(main, ["build-splits", "-w", str(workdir), *args])


def test_ucf101_split_of_the_sample_clips_lists_the_rest_as_missing(workdir):
    result = build(workdir, "--ucf101", str(DATA / "ucf101_splits"), "--split", "1")
    assert result.exit_code == 0, result.output
    assert "ucf101 split 1: 2 train, 1 test videos over 101 classes; 13,317 listed but not extracted" in result.output
    out = workdir / "splits" / "ucf101" / "split1"
    assert (out / "test_rgb.txt").read_text() == "frames/ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01 66 0\n"
    assert len((out / "missing.txt").read_text().splitlines()) == 13317
    assert not (workdir / "splits" / "ucf101" / "split2").exists()


def test_hmdb51_writes_all_three_splits_by_default(workdir):
    result = build(workdir, "--hmdb51", str(DATA / "hmdb51_splits"))
    assert result.exit_code == 0, result.output
    assert [line.split(":")[0] for line in result.output.splitlines()] == [f"hmdb51 split {n}" for n in (1, 2, 3)]
    test_list = (workdir / "splits" / "hmdb51" / "split1" / "test_rgb.txt").read_text()
    assert test_list == "frames/wave/TrumanShow_wave_f_nm_np1_fr_med_26 17 50\n"


def test_folders_split_and_rerun_gives_identical_files(workdir):
    assert build(workdir, "--folders").exit_code == 0
    out = workdir / "splits" / "folders" / "split1"
    first = {p.name: p.read_bytes() for p in out.iterdir()}
    result = build(workdir, "--folders")
    assert "folders split 1: 5 train, 2 test videos over 4 classes; 0 listed" in result.output
    assert {p.name: p.read_bytes() for p in out.iterdir()} == first
    assert first["classes.txt"] == b"ApplyEyeMakeup\nSoccerJuggling\ncartwheel\nwave\n"


@pytest.mark.parametrize(("args", "message"), [
    ([], "Give exactly one source"),
    (["--folders", "--ucf101", str(DATA / "ucf101_splits")], "Give exactly one source"),
    (["--folders", "--ratio", "2"], "--ratio 2.0 is not between 0 and 1"),
    (["--ucf101", str(DATA / "hmdb51_splits")], "classInd.txt does not exist"),
])
def test_bad_options_are_one_line_errors(workdir, args, message):
    result = build(workdir, *args)
    assert result.exit_code != 0 and message in result.output and "Traceback" not in result.output


def test_a_workdir_without_frames_says_to_extract_first(tmp_path):
    result = build(tmp_path / "empty", "--folders")
    assert result.exit_code == 1 and "run `tsnpipe extract-frames VIDEO_DIR" in result.output


def test_help_default_group_regex_matches_the_stage():
    assert UCF101_GROUP == DEFAULT_GROUP_REGEX


def test_build_splits_as_a_real_process(workdir):
    result = run_tsnpipe("build-splits", "-w", str(workdir), "--hmdb51", str(DATA / "hmdb51_splits"), "--split", "2",
                         "--class-list", str(DATA / "hmdb51_splits" / "class_list.txt"), "--list-root", str(workdir))
    assert result.returncode == 0, result.stderr
    assert "hmdb51 split 2: 2 train, 1 test videos over 51 classes" in result.stdout
    classes = (workdir / "splits" / "hmdb51" / "split2" / "classes.txt").read_text().splitlines()
    assert classes.index("kick_ball") < classes.index("kick")
    train = (workdir / "splits" / "hmdb51" / "split2" / "train_rgb.txt").read_text().splitlines()
    assert all(line.startswith(f"{workdir}/frames/") for line in train)
