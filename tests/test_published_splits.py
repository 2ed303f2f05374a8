"""`build-splits --sthv2/--sthv1/--diving48/--mit`: tiny annotation files in each published format, written
here, over frames that the real `tsnpipe extract-frames` took from the bundled sample clips renamed to each
data set's video names."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from packing_data import SAMPLES
from tsnpipe.cli import main
from tsnpipe.stages.splits.sthv2 import MMACTION2_STHV2_FLIP, mirror_pairs
from tsnpipe.stages.splits.escapes import unescape

# published name (below VIDEO_DIR, as each data set ships) <- bundled sample clip
VIDEOS = {
    "20bn-something-something-v2/1001": "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01",
    "20bn-something-something-v2/1002": "SoccerJuggling/v_SoccerJuggling_g23_c01",
    "20bn-something-something-v2/1003": "wave/TrumanShow_wave_f_nm_np1_fr_med_26",
    "Diving48_rgb/_8Vy3dlHg2w_00000": "cartwheel/Turnk_r_Pippi_Michel_cartwheel_f_cm_np2_le_med_6",
    "Diving48_rgb/_8Vy3dlHg2w_00001": "wave/RATRACE_wave_f_nm_np1_fr_goo_37",
    "training/bouncing/giphy-a": "SoccerJuggling/v_SoccerJuggling_g24_c01",
    "validation/yawning/flickr-b": "wave/SchoolRulesHowTheyHelpUs_wave_f_nm_np1_ba_med_0",
    "hvu/videos_train/dQw4w9WgXcQ_000100_000205": "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01",
    "hvu/videos_val/vval0000000_000000_000100": "wave/RATRACE_wave_f_nm_np1_fr_goo_37",
}
V2_LABELS = {  # ids out of alphabetical order: the file's ids decide the label order
    "Pushing something from right to left": "2", "Approaching something with your camera": "0",
    "Pushing something from left to right": "1", "Holding something next to something": "3",
}


@pytest.fixture(scope="module")
def extracted(tmp_path_factory):
    root = tmp_path_factory.mktemp("published")
    for name, sample in VIDEOS.items():
        (root / "videos" / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(SAMPLES / f"{sample}.avi", root / "videos" / f"{name}.avi")
    result = CliRunner().invoke(main, ["extract-frames", str(root / "videos"), "-w", str(root / "W"), "--size", "64",
                                       "-j", "2", "--no-progress"])
    assert result.exit_code == 0, result.output
    return root / "W"


@pytest.fixture
def workdir(extracted, tmp_path):
    shutil.copytree(extracted, tmp_path / "W")
    return tmp_path / "W"


def build(workdir, *args):
    return CliRunner().invoke(main, ["build-splits", "-w", str(workdir), *args])


def sthv2_files(folder: Path, labels=V2_LABELS, train_text=None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "something-something-v2-labels.json").write_text(json.dumps(labels, indent=1))
    entry = lambda video, template: {"id": video, "label": template.lower(), "template": template,  # noqa: E731
                                     "placeholders": ["a cup"] * template.count("[")}
    train = [entry("1001", "Pushing [something] from left to right"), entry("1002", "Holding [something] next to [something]")]
    (folder / "something-something-v2-train.json").write_text(train_text if train_text is not None else json.dumps(train, indent=1))
    val = [entry("1003", "Pushing [something] from right to left"), entry("4242", "Approaching [something] with your camera")]
    (folder / "something-something-v2-validation.json").write_text(json.dumps(val, indent=1))
    return folder


def test_sthv2_reads_the_json_files_in_label_file_order_and_lists_the_rest_as_missing(workdir, tmp_path):
    result = build(workdir, "--sthv2", str(sthv2_files(tmp_path / "labels")))
    assert result.exit_code == 0, result.output
    assert "sthv2 split 1: 2 train, 1 test videos over 4 classes; 1 listed but not extracted" in result.output
    out = workdir / "splits" / "sthv2" / "split1"
    assert (out / "classes.txt").read_text().splitlines() == [
        "Approaching something with your camera", "Pushing something from left to right",
        "Pushing something from right to left", "Holding something next to something"]
    train = pd.read_csv(out / "train.csv")
    assert list(zip(train.video_id, train.label)) == [("20bn-something-something-v2/1001", 1), ("20bn-something-something-v2/1002", 3)]
    assert pd.read_csv(out / "test.csv").label.tolist() == [2]
    assert (out / "missing.txt").read_text() == "test\t4242\tnot extracted\n"
    params = json.loads((out / "params.json").read_text())
    assert params["flip"] == "swap-labels" and params["flip_pairs"] == [[1, 2]]


def test_names_with_a_newline_or_a_backslash_keep_one_line_each_in_missing_txt(workdir, tmp_path):
    folder = sthv2_files(tmp_path / "labels")
    val = json.loads((folder / "something-something-v2-validation.json").read_text())
    odd = ["42\n42", "4\\n2", "7\r7\t7"]  # a newline, a literal backslash-n, a carriage return and a tab
    val += [{**val[1], "id": name} for name in odd]
    (folder / "something-something-v2-validation.json").write_text(json.dumps(val))
    assert build(workdir, "--sthv2", str(folder)).exit_code == 0
    out = workdir / "splits" / "sthv2" / "split1"
    lines = (out / "missing.txt").read_text(encoding="utf-8").split("\n")[:-1]
    assert len(lines) == 4 and all(line.count("\t") == 2 for line in lines), lines
    assert [unescape(line.split("\t")[1]) for line in lines[1:]] == odd
    status = CliRunner().invoke(main, ["status", "-w", str(workdir)])
    assert "splits/sthv2/split1: 2 train, 1 test, 4 missing; up to date" in status.output, status.output


def test_mirror_pairs_are_the_left_right_names_and_give_mmaction2s_map_on_its_order():
    names = [f"class {i}" for i in range(174)]
    for a, b, what in ((86, 87, "Pulling something from {} to {}"), (93, 94, "Pushing something from {} to {}")):
        names[a], names[b] = what.format("left", "right"), what.format("right", "left")
    names[166], names[167] = "Turning the camera left while filming something", "Turning the camera right while filming something"
    pairs = mirror_pairs(names)
    assert {a: b for x, y in pairs for a, b in ((x, y), (y, x))} == MMACTION2_STHV2_FLIP


def test_sthv1_reads_semicolon_lists_with_commas_in_class_names(workdir, tmp_path):
    folder = tmp_path / "v1"
    folder.mkdir()
    (folder / "something-something-v1-labels.csv").write_text(
        "Holding something\nPutting something, something and something on the table\n")
    (folder / "something-something-v1-train.csv").write_text("1001;Putting something, something and something on the table\n1002;Holding something\n")
    (folder / "something-something-v1-validation.csv").write_text("1003;Holding something\r\n")
    result = build(workdir, "--sthv1", str(folder))
    assert result.exit_code == 0, result.output
    train = pd.read_csv(workdir / "splits" / "sthv1" / "split1" / "train.csv")
    assert train.label.tolist() == [1, 0] and train.class_name[0] == "Putting something, something and something on the table"
    assert json.loads((workdir / "splits" / "sthv1" / "split1" / "params.json").read_text())["flip_pairs"] == []


def test_diving48_names_classes_by_their_stages_in_vocabulary_order(workdir, tmp_path):
    folder = tmp_path / "diving"
    folder.mkdir()
    (folder / "Diving48_vocab.json").write_text(json.dumps([["Back", "15som", "05Twis", "FREE"], ["Inward", "25som", "NoTwis", "PIKE"]]))
    (folder / "Diving48_V2_train.json").write_text(json.dumps(
        [{"vid_name": "_8Vy3dlHg2w_00000", "label": 1, "start_frame": 0, "end_frame": 20}]))
    (folder / "Diving48_V2_test.json").write_text(json.dumps(
        [{"vid_name": "_8Vy3dlHg2w_00001", "label": 0, "start_frame": 0, "end_frame": 30},
         {"vid_name": "zzz_00009", "label": 0, "start_frame": 0, "end_frame": 30}]))
    result = build(workdir, "--diving48", str(folder))
    assert result.exit_code == 0, result.output
    out = workdir / "splits" / "diving48" / "split1"
    assert (out / "classes.txt").read_text() == "Back+15som+05Twis+FREE\nInward+25som+NoTwis+PIKE\n"  # mmaction2 label_map.txt
    assert (out / "train_rgb.txt").read_text().startswith("frames/Diving48_rgb/_8Vy3dlHg2w_00000 ")
    assert (out / "train_rgb.txt").read_text().endswith(" 1\n")
    assert (out / "missing.txt").read_text() == "test\tzzz_00009\tnot extracted\n"
    assert json.loads((out / "params.json").read_text()).get("flip", "on") == "on"


def mit_files(folder: Path, train_rows="bouncing/giphy-a.mp4,bouncing,3,0\n") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "moments_categories.txt").write_text("yawning,1\nbouncing,0\n")
    (folder / "trainingSet.csv").write_text(train_rows)
    (folder / "validationSet.csv").write_text("yawning/flickr-b.mp4,yawning,3,1\n")
    return folder


def test_mit_maps_class_folders_to_category_ids_and_finds_videos_below_training_and_validation(workdir, tmp_path):
    result = build(workdir, "--mit", str(mit_files(tmp_path / "mit")))
    assert result.exit_code == 0, result.output
    out = workdir / "splits" / "mit" / "split1"
    assert (out / "classes.txt").read_text() == "bouncing\nyawning\n"
    assert pd.read_csv(out / "train.csv").video_id.tolist() == ["training/bouncing/giphy-a"]
    assert pd.read_csv(out / "test.csv").label.tolist() == [1]
    assert (out / "missing.txt").read_text() == ""


@pytest.mark.parametrize(("make", "flag", "message"), [
    (lambda d: sthv2_files(d, train_text='[\n {"id": "1001",\n  "template": "Holding [something]"\n  "label": "x"}\n]'),
     "--sthv2", "something-something-v2-train.json line 4: not valid JSON"),
    (lambda d: sthv2_files(d, train_text='[\n {"id": "1001", "template": "Dancing"}\n]'),
     "--sthv2", "something-something-v2-train.json line 2: label 'Dancing' is not in"),
    (lambda d: sthv2_files(d, train_text='[\n {"id": "1001", "label": "x"}\n]'),
     "--sthv2", "something-something-v2-train.json line 2: the entry has no 'template'"),
    (lambda d: mit_files(d, "bouncing/giphy-a.mp4,bouncing,3,0\nswimming/x.mp4,swimming,3,0\n"),
     "--mit", "trainingSet.csv line 2: label 'swimming' is not in"),
    (lambda d: mit_files(d, 'bouncing/giphy-a.mp4,"bouncing\n'), "--mit", "trainingSet.csv line"),
])
def test_bad_annotations_are_one_line_errors_naming_file_and_line_and_write_nothing(workdir, tmp_path, make, flag, message):
    result = build(workdir, flag, str(make(tmp_path / "ann")))
    assert result.exit_code == 1 and message in result.output, result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    assert not (workdir / "splits").exists()


def test_sthv1_empty_label_and_diving48_label_outside_the_vocabulary(workdir, tmp_path):
    folder = tmp_path / "v1"
    folder.mkdir()
    (folder / "something-something-v1-labels.csv").write_text("Holding something\n")
    (folder / "something-something-v1-train.csv").write_text("1001;Holding something\n1002;\n")
    (folder / "something-something-v1-validation.csv").write_text("")
    result = build(workdir, "--sthv1", str(folder))
    assert result.exit_code == 1 and "something-something-v1-train.csv line 2: expected `<id>;<class>`" in result.output
    diving = tmp_path / "diving"
    diving.mkdir()
    (diving / "Diving48_vocab.json").write_text(json.dumps([["Back", "15som", "05Twis", "FREE"]]))
    (diving / "Diving48_V2_train.json").write_text('[{"vid_name": "a", "label": 0},\n{"vid_name": "b", "label": 48}]')
    (diving / "Diving48_V2_test.json").write_text("[]")
    result = build(workdir, "--diving48", str(diving))
    assert result.exit_code == 1 and "Diving48_V2_train.json line 2: label 48 is not a class" in result.output
    assert not (workdir / "splits").exists()


def test_published_sources_have_one_split(workdir, tmp_path):
    result = build(workdir, "--mit", str(mit_files(tmp_path / "mit")), "--split", "2")
    assert result.exit_code == 2 and "--mit has one published split" in result.output


def mmit_files(folder: Path, train_rows="bouncing/giphy-a.mp4,1,0\n") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "moments_categories.txt").write_text("bouncing,0\nyawning,1\nrunning,2\n")
    (folder / "trainingSet.csv").write_text(train_rows)
    (folder / "validationSet.csv").write_text("yawning/flickr-b.mp4,1\n")
    return folder


def test_mmit_rows_carry_every_label_into_the_tables_and_lists(workdir, tmp_path):
    result = build(workdir, "--mmit", str(mmit_files(tmp_path / "mmit")))
    assert result.exit_code == 0, result.output
    out = workdir / "splits" / "mmit" / "split1"
    train = pd.read_csv(out / "train.csv", dtype={"labels": str})
    assert train.labels.tolist() == ["1;0"] and train.label.tolist() == [1]
    assert (out / "train_rgb.txt").read_text().endswith(" 1 0\n")
    assert json.loads((out / "params.json").read_text())["multi_label"] is True


@pytest.mark.parametrize(("rows", "message"), [
    ("bouncing/giphy-a.mp4,1,0\nbouncing/giphy-c.mp4,\n", "trainingSet.csv line 2: bouncing/giphy-c.mp4 has no labels"),
    ("bouncing/giphy-a.mp4,1,7\n", "trainingSet.csv line 1: label '7' is not a class id of"),
])
def test_mmit_empty_or_unknown_labels_are_one_line_errors(workdir, tmp_path, rows, message):
    result = build(workdir, "--mmit", str(mmit_files(tmp_path / "mmit", rows)))
    assert result.exit_code == 1 and message in result.output, result.output
    assert not (workdir / "splits").exists()


def hvu_files(folder: Path, train_rows="juggling|dancing|beach,dQw4w9WgXcQ,10,20.5\nbeach,sea0000000a,0,10\n") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "HVU_Tags_Categories_V1.0.csv").write_text("Tags,Category\njuggling,action\nbeach,scene\ndancing,action\n")
    (folder / "hvu_train.csv").write_text("Tags,youtube_id,time_start,time_end\n" + train_rows)
    (folder / "hvu_val.csv").write_text("Tags,youtube_id,time_start,time_end\ndancing,zzzzzzzzzzz,0,10\njuggling|beach,vval0000000,0,10\n")
    return folder


def test_hvu_splits_one_category_with_sorted_tags_and_every_tag_of_a_clip(workdir, tmp_path):
    result = build(workdir, "--hvu", str(hvu_files(tmp_path / "hvu")))
    assert result.exit_code == 0, result.output
    out = workdir / "splits" / "hvu" / "split1"
    assert (out / "classes.txt").read_text() == "dancing\njuggling\n"
    train = pd.read_csv(out / "train.csv", dtype={"labels": str})
    assert train.video_id.tolist() == ["hvu/videos_train/dQw4w9WgXcQ_000100_000205"] and train.labels.tolist() == ["0;1"]
    assert (out / "missing.txt").read_text() == "test\tzzzzzzzzzzz_000000_000100\tnot extracted\n"
    params = json.loads((out / "params.json").read_text())
    assert params["multi_label"] is True and params["hvu_category"] == "action"
    result = build(workdir, "--hvu", str(hvu_files(tmp_path / "hvu")), "--hvu-category", "scene")
    assert result.exit_code == 0 and "1 train, 1 test videos over 1 classes" in result.output, result.output


def test_hvu_unknown_tag_is_a_one_line_error(workdir, tmp_path):
    result = build(workdir, "--hvu", str(hvu_files(tmp_path / "hvu", "juggling|surfing,dQw4w9WgXcQ,10,20.5\n")))
    assert result.exit_code == 1 and "hvu_train.csv line 2: tag 'surfing' is not in" in result.output, result.output
    assert not (workdir / "splits").exists()


def test_a_real_process_builds_sthv2_and_reports_a_bad_file_in_one_line(workdir, tmp_path):
    from conftest import run_tsnpipe

    good = run_tsnpipe("build-splits", "-w", str(workdir), "--sthv2", str(sthv2_files(tmp_path / "good")))
    assert good.returncode == 0 and "sthv2 split 1: 2 train, 1 test videos" in good.stdout, good.stderr
    bad = run_tsnpipe("build-splits", "-w", str(workdir), "--sthv2",
                      str(sthv2_files(tmp_path / "bad", train_text='[{"id": "1001", "template": "Holding [something] next to [something]"},\n{"id": 7')))
    assert bad.returncode == 1 and len(bad.stderr.strip().splitlines()) == 1
    assert "something-something-v2-train.json line 2: not valid JSON" in bad.stderr and "Traceback" not in bad.stderr
