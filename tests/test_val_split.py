"""`build-splits --val-ratio`: a group-aware validation list carved out of each training list."""

from __future__ import annotations

import re
import shutil

import pandas as pd
import pytest
from click.testing import CliRunner

from packing_data import extracted_workdir
from tsnpipe.cli import main
from tsnpipe.stages.errors import TsnpipeError
from tsnpipe.stages.splits.validation import carve_validation, source_group, validation_table

UCF_GROUP = r"_g(\d+)_"


def ucf_like_train(classes=("Archery", "Biking"), groups=range(8, 26), clips=3) -> pd.DataFrame:
    rows = [
        (f"{c}/v_{c}_g{g:02d}_c{k:02d}", i, c, 50, 49)
        for i, c in enumerate(classes) for g in groups for k in range(1, clips + 1)
    ]
    return pd.DataFrame(rows, columns=["video_id", "label", "class_name", "frames", "flow_pairs"])


def groups_of(table, source="ucf101"):
    pattern = re.compile(UCF_GROUP)
    return {(c, source_group(source, v, c, pattern)) for v, c in zip(table["video_id"], table["class_name"])}


def test_ucf101_validation_takes_whole_groups_near_the_ratio_in_every_class():
    train = ucf_like_train()
    kept, val = carve_validation("ucf101", train, 0.1, seed=0)
    assert len(kept) + len(val) == len(train)
    assert not groups_of(kept) & groups_of(val)  # no clip group on both sides
    for class_name in ("Archery", "Biking"):
        share = (val["class_name"] == class_name).sum() / (train["class_name"] == class_name).sum()
        assert 0.1 <= share <= 0.2  # 18 groups of 3 clips: 2 groups (6 of 54 clips)
    assert list(val.columns) == list(train.columns)


def test_same_seed_gives_the_same_validation_and_another_seed_another():
    train = ucf_like_train()
    first = carve_validation("ucf101", train, 0.1, seed=0)[1]
    assert carve_validation("ucf101", train, 0.1, seed=0)[1].equals(first)
    assert not carve_validation("ucf101", train, 0.1, seed=1)[1].equals(first)


@pytest.mark.parametrize(
    "source, video_id, class_name, group",
    [
        ("ucf101", "Archery/v_Archery_g08_c03", "Archery", "08"),
        ("hmdb51", "wave/RATRACE_wave_f_nm_np1_fr_goo_37", "wave", "RATRACE"),
        ("hmdb51", "kick_ball/Goal_1_kick_ball_f_cm_np1_ba_med_0", "kick_ball", "Goal_1"),
        ("folders", "pan/clip_without_group", "pan", "clip_without_group"),
    ],
)
def test_group_of_a_clip_by_source(source, video_id, class_name, group):
    assert source_group(source, video_id, class_name, re.compile(UCF_GROUP)) == group


def test_a_class_of_one_group_keeps_it_for_training():
    train = ucf_like_train(classes=("Archery",), groups=[8], clips=5)
    kept, val = carve_validation("ucf101", train, 0.5)
    assert len(kept) == 5 and val.empty


def test_ratio_outside_zero_one_is_refused():
    with pytest.raises(TsnpipeError, match="--val-ratio 1.5 is not between 0 and 1"):
        carve_validation("ucf101", ucf_like_train(), 1.5)


def test_without_val_csv_training_validates_on_the_test_list(tmp_path):
    test = ucf_like_train(groups=[1])
    assert validation_table(tmp_path, 2, test) is test


@pytest.fixture(scope="module")
def extracted(tmp_path_factory):
    return extracted_workdir(tmp_path_factory.mktemp("val_split") / "W")


def test_build_splits_writes_val_csv_out_of_train_and_a_rerun_without_it_removes_it(extracted, tmp_path):
    workdir = tmp_path / "W"
    shutil.copytree(extracted, workdir)
    out = workdir / "splits" / "folders" / "split1"
    runner = CliRunner()
    result = runner.invoke(main, ["build-splits", "-w", str(workdir), "--folders", "--ratio", "0.9", "--val-ratio", "0.3",
                                  "--group-regex", r"_(\d+)$"])
    assert result.exit_code == 0, result.output
    train, val, test = (pd.read_csv(out / name) for name in ("train.csv", "val.csv", "test.csv"))
    assert len(val) > 0 and f"{len(val)} validation" in result.output
    assert not set(val["video_id"]) & (set(train["video_id"]) | set(test["video_id"]))
    listed = {line.split()[0].removeprefix("frames/") for line in (out / "train_rgb.txt").read_text().splitlines()}
    assert listed == set(train["video_id"])  # the mmaction2 lists follow the shortened train list
    result = runner.invoke(main, ["build-splits", "-w", str(workdir), "--folders", "--ratio", "0.9", "--group-regex", r"_(\d+)$"])
    assert result.exit_code == 0, result.output
    assert not (out / "val.csv").exists()
    assert len(pd.read_csv(out / "train.csv")) == len(train) + len(val)


def test_training_validates_on_val_csv_when_the_split_has_one(tmp_path_factory, tmp_path):
    from train_workdir import build_sample_workdir
    from tsnpipe.stages.train.loop import fit
    from tsnpipe.stages.train.recipe import make_params

    workdir = build_sample_workdir(tmp_path_factory.getbasetemp() / "train_samples")
    split = tmp_path / "split1"
    shutil.copytree(workdir / "splits" / "samples" / "split1", split)
    train = pd.read_csv(split / "train.csv")
    ghost = train.head(1).assign(video_id="wave/not_extracted")  # a validation video no store holds
    ghost.to_csv(split / "val.csv", index=False)
    params = make_params("rgb", split_dir=str(split), store=str(workdir), backbone="resnet18", pretrained="none",
                         segments=2, size=32, epochs=1, batch=7, workers=0, channels_last=False)
    with pytest.raises(TsnpipeError, match="wave/not_extracted"):
        fit(params, tmp_path / "run", progress=False, log=lambda line: None)
