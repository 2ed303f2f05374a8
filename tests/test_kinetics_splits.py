"""`build-splits --kinetics`: the official CSVs' format on three real Kinetics clips in the CVDF layout."""

from __future__ import annotations

import random
import shutil

import pandas as pd
import pytest
from click.testing import CliRunner

from kinetics_data import CLIPS, GONE, HEADER, LABEL_MAP, clip_id, csv_line, extracted_kinetics, write_csvs
from tsnpipe.cli import main
from tsnpipe.stages.errors import TsnpipeError
from tsnpipe.stages.splits.kinetics import match_extracted, read_kinetics
from tsnpipe.stages.splits.validation import carve_validation


@pytest.fixture(scope="module")
def extracted(tmp_path_factory):
    return extracted_kinetics(tmp_path_factory.mktemp("kinetics"))


@pytest.fixture
def root(extracted, tmp_path):
    shutil.copytree(extracted / "W", tmp_path / "W")
    return tmp_path


def build(root, *args):
    return CliRunner().invoke(main, ["build-splits", "-w", str(root / "W"), *args])


def test_clips_are_found_by_name_in_the_mirror_folders_and_gone_ones_listed_as_missing(root):
    csvs = write_csvs(root / "csv")
    result = build(root, "--kinetics", str(csvs), "--kinetics-version", "400")
    assert result.exit_code == 0, result.output
    assert ("kinetics400 split 1: 2 train, 1 test videos over 2 classes; 1 listed but not extracted (see missing.txt); "
            "0 extracted but in no list") in result.output
    out = root / "W" / "splits" / "kinetics400" / "split1"
    train, test = pd.read_csv(out / "train.csv"), pd.read_csv(out / "test.csv")
    assert list(train["video_id"]) == ["train/R6llTwEh07w_000010_000020", "train/SOX5yA1l24A_000003_000013"]
    assert list(train["class_name"]) == ["abseiling", "air drumming"] and list(train["label"]) == [0, 1]
    assert list(test["video_id"]) == ["val/WUzgd7C1pWA_000100_000110"] and list(test["label"]) == [1]
    assert (train["frames"] > 90).all()  # 10 s at 10 fps
    assert (out / "classes.txt").read_text() == "abseiling\nair drumming\n"
    assert (out / "missing.txt").read_text() == f"train\t{clip_id(*GONE[1:4])}\tnot extracted\n"
    assert (out / "test_rgb.txt").read_text().startswith("frames/val/WUzgd7C1pWA_000100_000110 ")


def test_extracted_videos_no_list_names_are_counted(root):
    only_one = [CLIPS[0]]  # SOX5yA1l24A was extracted but is in no CSV
    result = build(root, "--kinetics", str(write_csvs(root / "csv", train=only_one + [(*CLIPS[0][:1], "zzzzzzzzzzz", 1, 11, "abseiling")],
                                                             validate=[(*CLIPS[2][:4], "abseiling")])),
                   "--kinetics-version", "400")
    assert result.exit_code == 0, result.output
    assert "1 extracted but in no list" in result.output


def test_an_unlabelled_test_csv_names_its_clips_without_entering_the_split(root):
    test = "youtube_id,time_start,time_end,split\nSOX5yA1l24A,3,13,test\n"
    csvs = write_csvs(root / "csv", train=[CLIPS[0]], validate=[(*CLIPS[2][:4], "abseiling")], test=test)
    result = build(root, "--kinetics", str(csvs), "--kinetics-version", "400")
    assert result.exit_code == 0, result.output
    assert "1 train, 1 test videos over 1 classes; 0 listed but not extracted (see missing.txt); 0 extracted but in no list" in result.output


def test_class_ids_are_the_sorted_names_which_is_mmaction2s_label_map_order(tmp_path):
    names = LABEL_MAP.read_text().splitlines()
    shuffled = random.Random(0).sample(names, len(names))
    rows = [("train", f"yt{i:09d}", i, i + 10, name) for i, name in enumerate(shuffled)]
    write_csvs(tmp_path, train=rows, validate=[("val", "val00000000", 0, 10, names[-1])])
    version, classes, listed = read_kinetics(tmp_path)
    assert version == 400 and classes == names
    label = dict(zip(listed["class_name"], listed["label"]))
    assert label["abseiling"] == 0 and label["zumba"] == 399 and label[names[137]] == 137


def test_the_version_comes_from_the_class_count_or_must_be_given(root):
    result = build(root, "--kinetics", str(write_csvs(root / "csv")))
    assert result.exit_code == 1 and "name 2 classes, not 400, 600 or 700" in result.output
    assert "--kinetics-version" in result.output and not (root / "W" / "splits").exists()
    assert build(root, "--kinetics", str(root / "csv"), "--kinetics-version", "700").exit_code == 0
    assert (root / "W" / "splits" / "kinetics700" / "split1" / "train.csv").is_file()


def test_a_clip_extracted_in_two_folders_is_matched_once_preferring_the_done_one():
    listed = pd.DataFrame({"clip": ["a_000001_000011"], "subset": ["train"], "label": [0]})
    frames = pd.DataFrame({"video_id": ["train/a_000001_000011", "abseiling/a_000001_000011", "train/b_000001_000011"],
                           "status": ["failed", "done", "done"]})
    entries, unlisted = match_extracted(listed, frames)
    assert list(entries["video_id"]) == ["abseiling/a_000001_000011"] and unlisted == 1


def test_validation_keeps_the_clips_of_one_youtube_video_together():
    ids = [f"train/v{v}_{s:06d}_{s + 10:06d}" for v in range(20) for s in (0, 20, 40)]
    train = pd.DataFrame({"video_id": ids, "label": 0, "class_name": "abseiling", "frames": 100, "flow_pairs": 0})
    kept, val = carve_validation("kinetics400", train, 0.2)
    youtube = lambda table: set(table["video_id"].str.extract(r"/(v\d+)_")[0])  # noqa: E731
    assert len(val) == 12 and not youtube(kept) & youtube(val)


def test_val_ratio_carves_validation_from_the_train_csv(root):
    train = [(*clip[:4], "abseiling") for clip in CLIPS[:2]]  # two YouTube videos of one class
    result = build(root, "--kinetics", str(write_csvs(root / "csv", train=train, validate=[(*CLIPS[2][:4], "abseiling")])),
                   "--kinetics-version", "400", "--val-ratio", "0.5")
    assert result.exit_code == 0, result.output
    assert "1 train, 1 validation, 1 test videos over 1 classes" in result.output
    val = pd.read_csv(root / "W" / "splits" / "kinetics400" / "split1" / "val.csv")
    assert len(val) == 1 and val["video_id"].iloc[0].startswith("train/")


def write_bad(root, train_lines: str, validate_lines: str = csv_line(CLIPS[2])) -> str:
    (root / "csv").mkdir(exist_ok=True)
    (root / "csv" / "train.csv").write_text(train_lines)
    (root / "csv" / "validate.csv").write_text(HEADER + "\n" + validate_lines)
    return str(root / "csv")


@pytest.mark.parametrize(("train", "validate", "message"), [
    ("label,youtube_id,start,end,split\nabseiling,R6llTwEh07w,10,20,train\n", None,
     "train.csv line 1: the header label,youtube_id,start,end,split lacks time_start,time_end"),
    (HEADER + "\n" + csv_line(CLIPS[1]), csv_line(("val", "WUzgd7C1pWA", 100, 110, "zumba")),
     "validate.csv line 2: label 'zumba' is not a class of train.csv; fix the label"),
    (HEADER + "\n" + csv_line(CLIPS[0]) + csv_line(CLIPS[1]) + csv_line((*CLIPS[0][:4], "air drumming")), None,
     "train.csv line 4 lists R6llTwEh07w_000010_000020, already listed at"),
    (HEADER + "\n" + csv_line(CLIPS[1]), csv_line(("val", "SOX5yA1l24A", 3, 13, "air drumming")),
     "validate.csv line 2 lists SOX5yA1l24A_000003_000013, already listed at"),
    (HEADER + "\n" + "abseiling,R6llTwEh07w,ten,20,train\n", None, "train.csv line 2: time_start 'ten' is not a whole number"),
])
def test_bad_csvs_are_one_line_errors_naming_file_and_line_and_write_nothing(root, train, validate, message):
    csvs = write_bad(root, train, validate or csv_line(CLIPS[2]))
    result = build(root, "--kinetics", csvs, "--kinetics-version", "400")
    assert result.exit_code == 1 and message in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output
    assert not (root / "W" / "splits").exists()


def test_read_kinetics_needs_validate_csv(tmp_path):
    (tmp_path / "train.csv").write_text(HEADER + "\n" + csv_line(CLIPS[0]))
    with pytest.raises(TsnpipeError, match="has no validate.csv or val.csv; point --kinetics at the folder"):
        read_kinetics(tmp_path, 400)


def test_a_run_config_trains_on_the_kinetics_split_build_splits_wrote(tmp_path):
    from tsnpipe.run import split_folder

    (tmp_path / "splits" / "kinetics600" / "split1").mkdir(parents=True)
    config = {"workdir": str(tmp_path), "build-splits": {"kinetics": "k600/annotations"}}
    assert split_folder(config) == tmp_path / "splits" / "kinetics600" / "split1"
    config["build-splits"]["kinetics-version"] = 700
    assert split_folder(config) == tmp_path / "splits" / "kinetics700" / "split1"
    assert split_folder({"workdir": str(tmp_path), "build-splits": {"list": "train.txt"}}) == tmp_path / "splits" / "list" / "split1"
