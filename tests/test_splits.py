"""Splits from the full official UCF101 and HMDB51 lists and from class folders."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from tsnpipe.stages.errors import TsnpipeError
from tsnpipe.stages.splits.folders import folder_entries
from tsnpipe.stages.splits.hmdb51 import read_hmdb51
from tsnpipe.stages.splits.tables import build_split, split_dir, split_files, write_split_files
from tsnpipe.stages.splits.ucf101 import read_ucf101

DATA = Path(__file__).parent / "data"
UCF = DATA / "ucf101_splits"
HMDB = DATA / "hmdb51_splits"


def frames_table(entries: pd.DataFrame, frames: int = 30) -> pd.DataFrame:
    """A frames manifest in which every listed video was extracted."""
    return pd.DataFrame({"video_id": entries["video_id"], "status": "done", "frames": frames})


@pytest.mark.parametrize(("number", "train", "test"), [(1, 9537, 3783), (2, 9586, 3734), (3, 9624, 3696)])
def test_ucf101_official_split_sizes(number, train, test):
    classes, entries = read_ucf101(UCF, number)
    assert len(classes) == 101
    assert (entries["subset"] == "train").sum() == train
    assert (entries["subset"] == "test").sum() == test
    assert entries.groupby("subset")["label"].nunique().to_dict() == {"train": 101, "test": 101}


def test_ucf101_ids_keep_the_listed_spelling_and_labels_are_zero_based():
    classes, entries = read_ucf101(UCF, 1)
    labels = dict(zip(entries["video_id"], entries["label"]))
    assert classes[0] == "ApplyEyeMakeup" and classes[100] == "YoYo"
    assert labels["ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01"] == 0
    assert labels["HandstandPushups/v_HandStandPushups_g01_c01"] == classes.index("HandstandPushups")
    assert not any("\r" in v or v.endswith(".avi") for v in entries["video_id"])


def test_ucf101_split1_tests_on_groups_1_to_7():
    _, entries = read_ucf101(UCF, 1)
    groups = entries["video_id"].str.extract(r"_g(\d+)_")[0].astype(int)
    assert set(groups[entries["subset"] == "test"]) == set(range(1, 8))
    assert set(groups[entries["subset"] == "train"]) == set(range(8, 26))


@pytest.mark.parametrize("number", [1, 2, 3])
def test_hmdb51_every_split_has_70_train_and_30_test_per_class(number):
    classes, entries = read_hmdb51(HMDB, number)
    assert len(classes) == 51
    per_class = entries.groupby(["label", "subset"]).size().unstack()
    assert (per_class["train"] == 70).all() and (per_class["test"] == 30).all()
    assert entries["video_id"].str.match(r"^[a-z_]+/[^/]+$").all() and not entries["video_id"].str.endswith(".avi").any()


def test_hmdb51_class_order_is_sorted_names_unless_a_class_list_is_given():
    sorted_classes, _ = read_hmdb51(HMDB, 1)
    assert sorted_classes == sorted(sorted_classes)
    assert sorted_classes.index("kick") < sorted_classes.index("kick_ball")
    caffe_classes, entries = read_hmdb51(HMDB, 1, class_list=HMDB / "class_list.txt")
    assert caffe_classes.index("kick_ball") == 20 and caffe_classes.index("kick") == 21
    assert entries.loc[entries["video_id"].str.startswith("kick_ball/"), "label"].unique().tolist() == [20]


def test_missing_split_files_name_the_folder(tmp_path):
    with pytest.raises(TsnpipeError, match=str(tmp_path)):
        read_ucf101(tmp_path, 1)
    with pytest.raises(TsnpipeError, match="testTrainMulti_7030_splits"):
        read_hmdb51(tmp_path, 1)


def ucf_like_ids() -> list[str]:
    return [f"{c}/v_{c}_g{g:02d}_c{k:02d}" for c in ("Archery", "Bowling", "Diving") for g in range(1, 11) for k in range(1, 2 + g % 4)]


@pytest.mark.parametrize(("seed", "ratio"), [(0, 0.7), (1, 0.7), (2, 0.5), (3, 0.9)])
def test_folder_split_never_puts_a_group_on_both_sides(seed, ratio):
    classes, entries = folder_entries(ucf_like_ids(), ratio=ratio, seed=seed)
    assert classes == ["Archery", "Bowling", "Diving"]
    entries["group"] = entries["video_id"].str.extract(r"^([^/]+/.*_g\d+)_")[0]
    assert (entries.groupby("group")["subset"].nunique() == 1).all()
    for _, per_class in entries.groupby("label"):
        train_share = (per_class["subset"] == "train").mean()
        assert abs(train_share - ratio) < 0.25 and (per_class["subset"] == "test").any()


def test_folder_split_is_seeded():
    _, first = folder_entries(ucf_like_ids(), seed=0)
    _, again = folder_entries(list(reversed(ucf_like_ids())), seed=0)
    _, other = folder_entries(ucf_like_ids(), seed=1)
    assert first.equals(again)
    assert not first["subset"].equals(other["subset"])


def test_folder_split_with_a_user_group_regex():
    ids = [f"wave/{person}_take{k}" for person in ("ann", "bob", "cat", "dan") for k in range(3)]
    _, entries = folder_entries(ids, ratio=0.5, group_regex=r"^([a-z]+)_")
    people = entries["video_id"].str.extract(r"/([a-z]+)_")[0]
    assert (entries.groupby(people)["subset"].nunique() == 1).all()
    assert sorted(entries["subset"].value_counts().tolist()) == [6, 6]


def test_folder_split_refuses_bad_options():
    with pytest.raises(TsnpipeError, match="--ratio"):
        folder_entries(ucf_like_ids(), ratio=1.5)
    with pytest.raises(TsnpipeError, match="--group-regex"):
        folder_entries(ucf_like_ids(), group_regex="(")


def test_missing_and_failed_videos_are_listed_not_fatal():
    classes, entries = read_ucf101(UCF, 1)
    frames = frames_table(entries)
    frames.loc[frames["video_id"] == "YoYo/v_YoYo_g01_c01", "status"] = "failed"
    frames = frames[frames["video_id"] != "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01"]
    split = build_split("ucf101", 1, classes, entries, frames)
    assert (len(split.train), len(split.test)) == (9536, 3782)
    assert split.missing.values.tolist() == [
        ["train", "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01", "not extracted"],
        ["test", "YoYo/v_YoYo_g01_c01", "frames failed"],
    ]


def test_list_files_use_frame_and_flow_counts_and_zero_based_labels():
    classes, entries = read_hmdb51(HMDB, 1)
    frames = frames_table(entries, frames=40)
    flow = pd.DataFrame({"video_id": entries["video_id"], "status": "done", "pairs": 39})
    flow.loc[flow["video_id"].str.startswith("wave/"), "status"] = "failed"
    files = split_files(build_split("hmdb51", 1, classes, entries, frames, flow))
    rgb = files["train_rgb.txt"].decode().splitlines()
    flow_lines = files["train_flow.txt"].decode().splitlines()
    assert rgb[0] == "frames/brush_hair/April_09_brush_hair_u_nm_np1_ba_goo_0 40 0"
    assert len(rgb) == 51 * 70 and len(flow_lines) == 50 * 70
    assert flow_lines[0] == "flow/brush_hair/April_09_brush_hair_u_nm_np1_ba_goo_0 39 0"
    assert files["classes.txt"].decode().splitlines()[50] == "wave"
    absolute = split_files(build_split("hmdb51", 1, classes, entries, frames, flow), list_root="/data/W")
    assert absolute["test_rgb.txt"].decode().startswith("/data/W/frames/brush_hair/")


def test_rerun_writes_byte_identical_files(tmp_path):
    def run(workdir):
        classes, entries = read_ucf101(UCF, 2)
        split = build_split("ucf101", 2, classes, entries, frames_table(entries))
        return write_split_files(split_dir(workdir, "ucf101", 2), split_files(split))

    first, second = run(tmp_path / "a"), run(tmp_path / "b")
    names = sorted(p.name for p in first.iterdir())
    assert names == ["classes.txt", "missing.txt", "params.json", "test.csv", "test_flow.txt", "test_rgb.txt",
                     "train.csv", "train_flow.txt", "train_rgb.txt"]
    assert all((first / n).read_bytes() == (second / n).read_bytes() for n in names)
    assert first == tmp_path / "a" / "splits" / "ucf101" / "split2"
    assert len(pd.read_csv(first / "train.csv")) == 9586
