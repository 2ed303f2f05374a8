"""`tsnpipe run CONFIG.toml`: the whole chain on real clips, and a second run that does no work."""

import json
import shutil

import click
import pytest
from click.testing import CliRunner

from conftest import SAMPLES
from tsnpipe.cli import main
from tsnpipe.run import option_args
from tsnpipe.stages.pan_task import make_pan_clips
from tsnpipe.stages.splits import folder_entries


@pytest.mark.parametrize("section, expected", [
    ({"fps": 10, "size": "340x256"}, ["--fps", "10", "--size", "340x256"]),
    ({"progress": False}, ["--no-progress"]),
    ({"progress": True}, ["--progress"]),
    ({"on-decode-error": "keep"}, ["--on-decode-error", "keep"]),
    ({"on_decode_error": "keep"}, ["--on-decode-error", "keep"]),
])
def test_config_keys_become_the_commands_options(section, expected):
    assert option_args(main.commands["extract-frames"], section) == expected


def test_list_values_and_repeatable_options():
    assert option_args(main.commands["train"], {"lr-steps": [30, 60]}) == ["--lr-steps", "30,60"]
    assert option_args(main.commands["build-splits"], {"folders": True, "split": [1, 2]}) == [
        "--folders", "--split", "1", "--split", "2"]


def test_unknown_config_key_is_refused():
    with pytest.raises(click.UsageError, match="has no option 'speed'"):
        option_args(main.commands["extract-frames"], {"speed": 2})


def test_pan_copies_split_by_source_clip_across_classes(tmp_path):
    clips = make_pan_clips(SAMPLES / "wave", tmp_path / "videos")
    assert sorted({p.parent.name for p in clips}) == ["pan_down", "pan_sideways", "static"]
    ids = [p.relative_to(tmp_path / "videos").with_suffix("").as_posix() for p in clips]
    classes, entries = folder_entries(ids, ratio=0.5, group_regex="^(.*)$", scope="all")
    assert classes == ["pan_down", "pan_sideways", "static"]
    side = {}
    for video_id, subset in zip(entries.video_id, entries.subset):
        side.setdefault(video_id.split("/")[1], set()).add(subset)
    assert all(len(s) == 1 for s in side.values()) and {"train", "test"} == set().union(*side.values())


CONFIG = """
workdir = "work"
videos = "videos"
[extract-frames]
size = "64"
jobs = 2
progress = false
[extract-flow]
backend = "opencv"
jobs = 2
progress = false
[build-splits]
folders = true
ratio = 0.5
group-regex = "^(.*)$"
group-scope = "all"
[pack]
format = "lmdb"
progress = false
[train]
modalities = ["rgb", "flow"]
backbone = "resnet18"
pretrained = "none"
segments = 2
size = 48
batch = 3
epochs = 1
workers = 0
progress = false
[train.flow]
length = 2
[test]
segments = 2
crops = 1
workers = 0
progress = false
[fuse]
weights = "1:1.5"
"""


@pytest.mark.slow
def test_run_completes_and_a_second_run_does_no_work(tmp_path):
    make_pan_clips(SAMPLES / "wave", tmp_path / "videos")
    (tmp_path / "run.toml").write_text(CONFIG)
    first = CliRunner().invoke(main, ["run", str(tmp_path / "run.toml")])
    assert first.exit_code == 0, first.output
    assert "9 extracted, 0 up to date, 0 failed" in first.output
    assert "fused 1:1.5" in first.output
    assert (tmp_path / "work" / "scores" / "fused.pkl").exists()
    second = CliRunner().invoke(main, ["run", str(tmp_path / "run.toml")])
    assert second.exit_code == 0, second.output
    assert "0 extracted, 9 up to date, 0 failed" in second.output
    assert "== test rgb: up to date" in second.output and "== test flow: up to date" in second.output
    assert "resuming" in second.output and "epoch 1/1" not in second.output
    status = json.loads(CliRunner().invoke(main, ["status", "-w", str(tmp_path / "work"), "--json"]).output)
    assert status["frames"]["up to date"] == status["flow"]["up to date"] == 9
    shutil.rmtree(tmp_path / "work" / "frames" / "static" / "RATRACE_wave_f_nm_np1_fr_goo_37")
    CliRunner().invoke(main, ["extract-frames", str(tmp_path / "videos"), "-w", str(tmp_path / "work"), "--size", "64"])
    status = json.loads(CliRunner().invoke(main, ["status", "-w", str(tmp_path / "work"), "--json"]).output)
    assert status["flow"]["input changed"] == 1  # re-extracted frames: its flow must be redone
    runs = sorted(p.name for p in (tmp_path / "work" / "runs").iterdir())
    assert len(runs) == 2

    shutil.copy(SAMPLES / "cartwheel/Turnk_r_Pippi_Michel_cartwheel_f_cm_np2_le_med_6.avi", tmp_path / "videos" / "static")
    third = CliRunner().invoke(main, ["run", str(tmp_path / "run.toml")])
    assert "1 extracted, 9 up to date, 0 failed" in third.output
    assert len(list((tmp_path / "work" / "runs").iterdir())) == 4  # new data: new runs, the old ones kept
