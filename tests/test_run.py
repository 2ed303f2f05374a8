"""`tsnpipe run CONFIG.toml`: the whole chain on real clips, and a second run that does no work."""

import json
import shutil

import click
import pytest
from click.testing import CliRunner

from conftest import SAMPLES
from tsnpipe.cli import main
from tsnpipe.run import option_args, run_name
from tsnpipe.stages.pan_task import GROUP_REGEX, make_pan_clips
from tsnpipe.stages.splits.folders import folder_entries


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
    clips = make_pan_clips(SAMPLES / "wave", tmp_path / "videos", jobs=2)
    assert len(clips) == 3 * 6 and all(p.is_file() for p in clips)
    ids = [p.relative_to(tmp_path / "videos").with_suffix("").as_posix() for p in clips]
    classes, entries = folder_entries(ids, ratio=0.5, group_regex=GROUP_REGEX, scope="all")
    assert classes == ["pan_sideways", "pan_vertical", "static"]
    side = {}
    for video_id, subset in zip(entries.video_id, entries.subset):
        side.setdefault(video_id.split("/")[1].split("__")[0], set()).add(subset)
    assert len(side) == 3
    assert all(len(s) == 1 for s in side.values()) and {"train", "test"} == set().union(*side.values())


def _split_and_store(root):
    split = root / "splits" / "folders" / "split1"
    split.mkdir(parents=True)
    for name in ("train.csv", "test.csv", "classes.txt"):
        (split / name).write_text(f"{name}\n")
    store = root / "stores" / "frames.lmdb"
    store.mkdir(parents=True)
    (store / "data.mdb").write_bytes(b"frames")
    return split, store


def test_run_names_survive_moving_the_workdir_and_follow_the_data(tmp_path):
    split, store = _split_and_store(tmp_path / "here")
    recipe = ["--epochs", "3", "--store", str(store)]
    name = run_name("rgb", recipe, split, str(store), str(tmp_path / "here"))
    shutil.copytree(tmp_path / "here", tmp_path / "there")
    moved_split, moved_store = tmp_path / "there" / "splits" / "folders" / "split1", tmp_path / "there" / "stores" / "frames.lmdb"
    assert run_name("rgb", ["--epochs", "3", "--store", str(moved_store)], moved_split, str(moved_store),
                    str(tmp_path / "there")) == name
    assert run_name("rgb", ["--epochs", "3", "--store", str(store), "--no-progress"], split, str(store),
                    str(tmp_path / "here")) == name
    assert run_name("rgb", ["--epochs", "4", "--store", str(store)], split, str(store), str(tmp_path / "here")) != name
    (moved_split / "train.csv").write_text("other videos\n")
    assert run_name("rgb", ["--epochs", "3", "--store", str(moved_store)], moved_split, str(moved_store),
                    str(tmp_path / "there")) != name


CONFIG = """
workdir = "work"
videos = "videos"
[extract-frames]
size = "64"
fps = 5
jobs = 2
progress = false
[extract-flow]
backend = "opencv"
jobs = 2
progress = false
[build-splits]
folders = true
ratio = 0.5
group-regex = "^(.*)__"
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
    assert "18 extracted, 0 up to date, 0 failed" in first.output
    assert "fused 1:1.5" in first.output
    assert (tmp_path / "work" / "scores" / "fused.pkl").exists()
    report = (tmp_path / "work" / "report.html").resolve()
    assert f"run: report {report} (open it in a browser)" in first.output and report.stat().st_size > 10_000
    second = CliRunner().invoke(main, ["run", str(tmp_path / "run.toml")])
    assert second.exit_code == 0, second.output
    assert "0 extracted, 18 up to date, 0 failed" in second.output
    assert "== test rgb: up to date" in second.output and "== test flow: up to date" in second.output
    assert "== train rgb: up to date" in second.output and "epoch 1/1" not in second.output
    assert len(list((tmp_path / "work" / "runs").glob("*/best.pt"))) == 2
    assert not list((tmp_path / "work" / "runs").glob("*/last.pt"))  # a finished run keeps one checkpoint
    status = json.loads(CliRunner().invoke(main, ["status", "-w", str(tmp_path / "work"), "--json"]).output)
    assert status["frames"]["up to date"] == status["flow"]["up to date"] == 18
    shutil.rmtree(tmp_path / "work" / "frames" / "static" / "RATRACE_wave_f_nm_np1_fr_goo_37__left")
    CliRunner().invoke(main, ["extract-frames", str(tmp_path / "videos"), "-w", str(tmp_path / "work"), "--size", "64",
                              "--fps", "5"])
    status = json.loads(CliRunner().invoke(main, ["status", "-w", str(tmp_path / "work"), "--json"]).output)
    assert status["flow"]["input changed"] == 1  # re-extracted frames: its flow must be redone
    runs = sorted(p.name for p in (tmp_path / "work" / "runs").iterdir())
    assert len(runs) == 2

    shutil.copy(SAMPLES / "cartwheel/Turnk_r_Pippi_Michel_cartwheel_f_cm_np2_le_med_6.avi",
                tmp_path / "videos" / "static" / "Turnk_r_Pippi_Michel_cartwheel_f_cm_np2_le_med_6__left.avi")
    third = CliRunner().invoke(main, ["run", str(tmp_path / "run.toml")])
    assert "1 extracted, 18 up to date, 0 failed" in third.output
    assert len(list((tmp_path / "work" / "runs").iterdir())) == 4  # new data: new runs, the old ones kept
