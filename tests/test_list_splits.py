"""`build-splits --list TRAIN --list-test TEST [--classes FILE]`: mmaction2's list formats on real extracted clips."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest
from click.testing import CliRunner

from kinetics_data import LABEL_MAP, extracted_kinetics
from tsnpipe.cli import main

R6 = "train/R6llTwEh07w_000010_000020"
SOX = "train/SOX5yA1l24A_000003_000013"
WUZ = "val/WUzgd7C1pWA_000100_000110"


@pytest.fixture(scope="module")
def extracted(tmp_path_factory):
    return extracted_kinetics(tmp_path_factory.mktemp("lists"))


@pytest.fixture
def root(extracted, tmp_path):
    shutil.copytree(extracted / "W", tmp_path / "W")
    shutil.copytree(extracted / "videos", tmp_path / "videos")
    (tmp_path / "W" / "manifests" / "frames.run.json").write_text(
        (extracted / "W" / "manifests" / "frames.run.json").read_text().replace(str(extracted), str(tmp_path)))
    return tmp_path


def build(root, train: str, test: str, *args):
    (root / "train.txt").write_text(train)
    (root / "test.txt").write_text(test)
    return CliRunner().invoke(main, ["build-splits", "-w", str(root / "W"), "--list", str(root / "train.txt"),
                                     "--list-test", str(root / "test.txt"), *args])


def test_video_lists_with_class_names_from_mmaction2s_label_map(root):
    result = build(root, f"{R6}.mp4 0\n{SOX}.mp4 1\ntrain/never_000000_000010.mp4 1\n", f"{WUZ}.mp4 1\n",
                   "--classes", str(LABEL_MAP))
    assert result.exit_code == 0, result.output
    assert ("list split 1: 2 train, 1 test videos over 400 classes; 1 listed but not extracted (see missing.txt); "
            "0 extracted but in no list") in result.output
    out = root / "W" / "splits" / "list" / "split1"
    train = pd.read_csv(out / "train.csv")
    assert list(train["video_id"]) == [R6, SOX] and list(train["class_name"]) == ["abseiling", "air drumming"]
    assert (out / "classes.txt").read_text() == LABEL_MAP.read_text()
    assert (out / "missing.txt").read_text() == "train\ttrain/never_000000_000010\tnot extracted\n"
    assert (out / "test_rgb.txt").read_text().startswith(f"frames/{WUZ} ") and (out / "test_rgb.txt").read_text().endswith(" 1\n")


def test_frame_lists_and_absolute_paths_below_the_video_folder(root):
    result = build(root, f"{R6} 300 2\n{root / 'videos' / SOX}.mp4 300 0\n", f"{WUZ} 300 2\n")
    assert result.exit_code == 0, result.output
    assert "list split 1: 2 train, 1 test videos over 3 classes" in result.output
    train = pd.read_csv(root / "W" / "splits" / "list" / "split1" / "train.csv")
    assert list(zip(train["video_id"], train["label"], train["class_name"].astype(str))) == [(R6, 2, "2"), (SOX, 0, "0")]


def test_class_folder_paths_match_the_mirrors_flat_folders_by_file_name(root):
    result = build(root, f"abseiling/{R6[6:]}.mp4 0\nair_drumming/{SOX[6:]}.mp4 1\n", f"air_drumming/{WUZ[4:]}.mp4 1\n")
    assert result.exit_code == 0, result.output
    assert "2 train, 1 test videos over 2 classes; 0 listed but not extracted (see missing.txt); 0 extracted but in no list" in result.output
    train = pd.read_csv(root / "W" / "splits" / "list" / "split1" / "train.csv")
    assert list(train["video_id"]) == [R6, SOX]


def test_extracted_videos_no_list_names_are_counted(root):
    result = build(root, f"{R6}.mp4 0\n", f"{WUZ}.mp4 0\n")
    assert result.exit_code == 0 and "1 extracted but in no list" in result.output, result.output


@pytest.mark.parametrize(("train", "test", "args", "message"), [
    (f"{R6}.mp4 0 3\n", f"{WUZ}.mp4 1\n", [], "train.txt line 1: 'train/R6llTwEh07w_000010_000020.mp4 0 3' holds 2 labels"),
    (f"{R6} 300 0\n{SOX} 300 1 4\n", f"{WUZ} 300 1\n", [], "train.txt line 2: 'train/SOX5yA1l24A_000003_000013 300 1 4' holds 2 labels"),
    (f"{R6}.mp4 0\n", f"../elsewhere/{WUZ}.mp4 1\n", [], "test.txt line 1: ../elsewhere/val/WUzgd7C1pWA_000100_000110.mp4 is outside the video folder"),
    (f"{R6}.mp4 0\n", f"/srv/other/{WUZ}.mp4 1\n", [], "test.txt line 1: /srv/other/val/WUzgd7C1pWA_000100_000110.mp4 is outside the video folder"),
    (f"{R6}.mp4 0\n{R6}.mp4 1\n", f"{WUZ}.mp4 1\n", [], "train.txt line 2 lists train/R6llTwEh07w_000010_000020, already listed at"),
    (f"{R6}.mp4 0\n", f"{R6}.mp4 0\n", [], "test.txt line 1 lists train/R6llTwEh07w_000010_000020, already listed at"),
    (f"{R6}.mp4 400\n", f"{WUZ}.mp4 1\n", ["--classes", str(LABEL_MAP)], "train.txt line 1: label 400 is beyond the 400 classes of"),
    (f"{R6}.mp4 abseiling\n", f"{WUZ}.mp4 1\n", [], "train.txt line 1: the label 'abseiling' is not a class id"),
])
def test_bad_lists_are_one_line_errors_naming_file_and_line_and_write_nothing(root, train, test, args, message):
    result = build(root, train, test, *args)
    assert result.exit_code == 1 and message in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output
    assert not (root / "W" / "splits").exists()


def test_list_needs_list_test(root):
    (root / "train.txt").write_text(f"{R6}.mp4 0\n")
    result = CliRunner().invoke(main, ["build-splits", "-w", str(root / "W"), "--list", str(root / "train.txt")])
    assert result.exit_code == 2 and "--list TRAIN and --list-test TEST go together" in result.output


def test_help_names_the_file_formats():
    text = " ".join(CliRunner().invoke(main, ["build-splits", "--help"]).output.split())
    assert "label, youtube_id, time_start, time_end, split" in text and "<video path> <label>" in text
    assert "<frame dir> <count> <label>" in text and "<youtube_id>_<start>_<end>.<any extension>" in text
