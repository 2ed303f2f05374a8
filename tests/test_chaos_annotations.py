"""Hostile annotation files, split lists and run configs: empty ones that would train nothing, values past
every bound (ids, labels, times, line lengths, JSON nesting, class names), hand-edited split files, and a full
disk while a split is written. Each is one sentence naming the file (and line), through the real CLI, and
the previous split stays as it was."""

from __future__ import annotations

import json
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from chaos import assert_one_line_error, invoke, tree
from conftest import tsnpipe_cmd
from kinetics_data import CLIPS, HEADER, csv_line, extracted_kinetics, write_csvs
from test_published_splits import extracted, hvu_files, mit_files, mmit_files, sthv2_files, workdir  # noqa: F401
from train_workdir import build_sample_workdir

TINY = ["--modality", "rgb", "--backbone", "resnet18", "--pretrained", "none", "--segments", "2", "--size", "32",
        "--batch", "3", "--no-progress", "--no-channels-last", "--workers", "0", "--epochs", "1"]


def build(workdir: Path, *args: str):
    return invoke("build-splits", "-w", str(workdir), *args)


def sthv1_files(folder: Path, train: str = "1001;Holding something\n",
                labels: str = "Holding something\nDropping something\n") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "something-something-v1-labels.csv").write_text(labels)
    (folder / "something-something-v1-train.csv").write_text(train)
    (folder / "something-something-v1-validation.csv").write_text("1003;Dropping something\n")
    return folder


DIVING48_VOCAB = (("Back", "15som", "05Twis", "FREE"), ("Inward", "25som", "NoTwis", "PIKE"))


def diving48_files(folder: Path, train: str | None = None, vocab=DIVING48_VOCAB) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "Diving48_vocab.json").write_text(json.dumps([list(v) for v in vocab]))
    entry = lambda name, label: {"vid_name": name, "label": label, "start_frame": 0, "end_frame": 9}  # noqa: E731
    (folder / "Diving48_V2_train.json").write_text(train if train is not None else json.dumps([entry("_8Vy3dlHg2w_00000", 1)]))
    (folder / "Diving48_V2_test.json").write_text(json.dumps([entry("_8Vy3dlHg2w_00001", 0)]))
    return folder


# source flag, annotation folder maker, the file to empty, what "empty" is
EMPTY = [
    ("--mit", mit_files, "trainingSet.csv", ""),
    ("--mmit", mmit_files, "trainingSet.csv", ""),
    ("--sthv1", sthv1_files, "something-something-v1-train.csv", ""),
    ("--hvu", hvu_files, "hvu_train.csv", ""),
    ("--sthv2", sthv2_files, "something-something-v2-train.json", "[]"),
    ("--diving48", diving48_files, "Diving48_V2_train.json", "[]"),
]


@pytest.mark.parametrize(("flag", "make", "name", "empty"), EMPTY, ids=[case[0] for case in EMPTY])
def test_an_empty_train_file_is_refused_and_the_previous_split_kept(workdir, tmp_path, flag, make, name, empty):
    folder = make(tmp_path / "ann")
    assert build(workdir, flag, str(folder)).exit_code == 0
    before = tree(workdir, "splits")
    (folder / name).write_text(empty)
    assert_one_line_error(build(workdir, flag, str(folder)), "would have no train videos", "its train list names no videos",
                          "left as it was")
    assert tree(workdir, "splits") == before


def test_a_test_list_naming_no_extracted_video_is_refused(workdir, tmp_path):
    folder = sthv2_files(tmp_path / "ann")
    (folder / "something-something-v2-validation.json").write_text('[{"id": "9999", "template": "Holding [something] next to [something]"}]')
    assert_one_line_error(build(workdir, "--sthv2", str(folder)), "would have no test videos",
                          "none of the 1 test videos its lists name was extracted")
    assert not (workdir / "splits").exists()


@pytest.fixture(scope="module")
def kinetics_root(tmp_path_factory):
    return extracted_kinetics(tmp_path_factory.mktemp("kinetics"))


@pytest.fixture
def root(kinetics_root, tmp_path):
    shutil.copytree(kinetics_root / "W", tmp_path / "W")
    run_json = kinetics_root / "W" / "manifests" / "frames.run.json"
    (tmp_path / "W" / "manifests" / "frames.run.json").write_text(run_json.read_text().replace(str(kinetics_root), str(tmp_path)))
    return tmp_path


def kinetics(root: Path, train: bytes | str, validate: str | None = None):
    csvs = write_csvs(root / "csv")
    (csvs / "train.csv").write_bytes(train if isinstance(train, bytes) else train.encode())
    if validate is not None:
        (csvs / "validate.csv").write_text(validate)
    return build(root / "W", "--kinetics", str(csvs), "--kinetics-version", "400")


@pytest.mark.parametrize(("train", "words"), [
    (HEADER + "\n", ["train.csv lists no clips (only its header)"]),
    ((HEADER + "\n" + csv_line(CLIPS[0])).encode() + b"caf\xe9,abc,1,11,train\n", ["train.csv line 3 is not UTF-8"]),
    (HEADER + "\nabseiling,R6llTwEh07w,inf,20,train\n", ["train.csv line 2: time_start 'inf' is not a whole number"]),
    (HEADER + "\n" + csv_line(CLIPS[0]) + "abseiling,R6llTwEh07w,1e30,20,train\n", ["line 3: time_start '1e+30'", "6 digits"]),
    (HEADER + "\n" + csv_line(CLIPS[0]) + "abseiling," + "x" * 200_000 + ",1,2,train\n", ["train.csv line 3 is", "longer than"]),
    (HEADER + "\n" + csv_line(CLIPS[0]) + '"a\nb",R6llTwEh07x,1,11,train\n', ["train.csv", "holds a line break"]),
])
def test_kinetics_csvs_past_their_bounds_are_one_sentence(root, train, words):
    assert_one_line_error(kinetics(root, train), *words)
    assert not (root / "W" / "splits").exists()


def test_kinetics_reads_the_cvdf_val_csv_and_keeps_a_repeated_line_once(root):
    csvs = write_csvs(root / "csv")
    (csvs / "validate.csv").rename(csvs / "val.csv")
    with open(csvs / "train.csv", "a") as handle:
        handle.write(csv_line(CLIPS[0]))  # the same clip, label and list again
    result = build(root / "W", "--kinetics", str(csvs), "--kinetics-version", "400")
    assert result.exit_code == 0, result.output
    assert "2 train, 1 test videos" in result.output
    train = pd.read_csv(root / "W" / "splits" / "kinetics400" / "split1" / "train.csv")
    assert train["video_id"].is_unique


def lists(root: Path, train: str, test: str = "val/WUzgd7C1pWA_000100_000110.mp4 0\n", classes: bytes | None = None):
    (root / "train.txt").write_text(train)
    (root / "test.txt").write_text(test)
    args = ["--list", str(root / "train.txt"), "--list-test", str(root / "test.txt")]
    if classes is not None:
        (root / "classes.txt").write_bytes(classes)
        args += ["--classes", str(root / "classes.txt")]
    return build(root / "W", *args)


@pytest.mark.parametrize(("train", "classes", "words"), [
    ("train/R6llTwEh07w_000010_000020.mp4 100000000000000000000\n", None, ["train.txt line 1: the label '1000", "not a class id"]),
    ("train/R6llTwEh07w_000010_000020.mp4 30000000\n", None, ["train.txt line 1", "(0 to 99,999)"]),
    ("train/R6llTwEh07w_000010_000020.mp4 0\n", b"abseiling\n\xff\xfe\n", ["classes.txt line 2 is not UTF-8"]),
    ("train/R6llTwEh07w_000010_000020.mp4 0\n", b"abseiling\nabseiling\n", ["classes.txt line 2: class 'abseiling' is named twice"]),
])
def test_lists_and_class_files_past_their_bounds_are_one_sentence(root, train, classes, words):
    assert_one_line_error(lists(root, train, classes=classes), *words)
    assert not (root / "W" / "splits").exists()


def test_a_byte_order_mark_is_not_part_of_the_first_class_name(root):
    result = lists(root, "train/R6llTwEh07w_000010_000020.mp4 0\n", classes="\ufeffabseiling\n".encode())
    assert result.exit_code == 0, result.output
    assert (root / "W" / "splits" / "list" / "split1" / "classes.txt").read_bytes() == b"abseiling\n"


def entries(*ids) -> str:
    return "[\n" + ",\n".join(f'{{"id": {i}, "template": "Holding [something] next to [something]"}}' for i in ids) + "\n]"


@pytest.mark.parametrize(("flag", "make", "words"), [
    *[("--sthv2", (lambda value: lambda d: sthv2_files(d, train_text=entries('"1001"', value)))(value),
       ["something-something-v2-train.json line 3: id", "is not a video id"]) for value in ("1e400", "0.7", "true", "null")],
    ("--sthv2", lambda d: sthv2_files(d, train_text="[" * 100_000 + "]" * 100_000), ["train.json line 1: the JSON nests more than 32"]),
    ("--sthv2", lambda d: sthv2_files(d, labels={"Holding something\nnext to": "0", "Other": "1"}), ["labels.json", "holds a line break"]),
    ("--mit", lambda d: (mit_files(d), (d / "moments_categories.txt").write_text("yawning,1\nbouncing,²\n"))[0],
     ["moments_categories.txt line 2: expected `<class>,<id>`"]),
    ("--mit", lambda d: (mit_files(d), (d / "moments_categories.txt").write_text("yawning,1\nbouncing,0\nyawning,2\n"))[0],
     ["moments_categories.txt line 3: class 'yawning' is named twice"]),
    ("--mmit", lambda d: mmit_files(d, "bouncing/giphy-a.mp4,1,²\n"), ["trainingSet.csv line 1: label '²' is not a class id"]),
    ("--mit", lambda d: mit_files(d, "bouncing/giphy-a.mp4,bouncing,3,0\nbouncing/" + "x" * 100_000 + ".mp4,bouncing,3,0\n"),
     ["trainingSet.csv line 2 is", "longer than"]),
    ("--sthv1", lambda d: sthv1_files(d, labels="Holding something\nDropping something\nHolding something\n"),
     ["v1-labels.csv line 3: class 'Holding something' is named twice"]),
    ("--diving48", lambda d: diving48_files(d, vocab=(("Back", "15som", "05Twis", "FREE"),) * 2),
     ["Diving48_vocab.json: class 'Back+15som+05Twis+FREE' is named twice"]),
    ("--hvu", lambda d: hvu_files(d, "juggling,dQw4w9WgXcQ,inf,20\n"), ["hvu_train.csv line 2: time_start/time_end 'inf'"]),
])
def test_annotation_files_past_their_bounds_are_one_sentence(workdir, tmp_path, flag, make, words):
    assert_one_line_error(build(workdir, flag, str(make(tmp_path / "ann"))), *words)
    assert not (workdir / "splits").exists()


def official_files(folder: Path, files: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text)
    return folder


@pytest.mark.parametrize(("flag", "files", "words"), [
    ("--ucf101", {"classInd.txt": "1 ApplyEyeMakeup\n\u00b2 Archery\n"}, ["classInd.txt has the line '\u00b2 Archery'"]),
    ("--ucf101", {"classInd.txt": "1 ApplyEyeMakeup\n2\n"}, ["classInd.txt has the line '2', not `<id> <class>`"]),
    ("--ucf101", {"classInd.txt": "1 ApplyEyeMakeup\n", "trainlist01.txt": "ApplyEyeMakeup/v_a.avi x\n",
                  "testlist01.txt": ""}, ["trainlist01.txt gives ApplyEyeMakeup/v_a.avi label x"]),
    ("--hmdb51", {"wave_test_split1.txt": "a.avi 1 extra\n"}, ["wave_test_split1.txt has the line 'a.avi 1 extra'"]),
])
def test_official_ucf101_and_hmdb51_files_with_damaged_lines_are_one_sentence(workdir, tmp_path, flag, files, words):
    result = build(workdir, flag, str(official_files(tmp_path / "official", files)), "--split", "1")
    assert_one_line_error(result, *words)


def test_json_with_a_megabyte_of_escaped_quotes_or_a_5000_digit_id_is_one_sentence_in_seconds(workdir, tmp_path):
    folder = sthv2_files(tmp_path / "ann", train_text='[{"id": "' + '\\"' * 500_000 + '}]')  # never closes its string
    proc = subprocess.run(tsnpipe_cmd("build-splits", "-w", str(workdir), "--sthv2", str(folder)), capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "something-something-v2-train.json line 1: not valid JSON" in proc.stderr
    (folder / "something-something-v2-train.json").write_text(entries('"1001"', "7" * 5000))
    assert_one_line_error(build(workdir, "--sthv2", str(folder)), "train.json line 3: not valid JSON")


# The process's own peak (VmHWM starts afresh at exec; getrusage's ru_maxrss keeps the forking parent's, pytest's)
PEAK_RSS = """import re, sys
from tsnpipe.cli import main
try:
    main(sys.argv[1:])
finally:
    status = open("/proc/self/status").read()
    print("peak_rss_mb", int(re.search(r"VmHWM:\\s+(\\d+)", status)[1]) // 1024, file=sys.stderr)
"""


def test_a_file_of_one_100_mb_line_is_refused_without_holding_it(workdir, tmp_path):
    folder = mit_files(tmp_path / "mit")
    with open(folder / "trainingSet.csv", "w") as handle:
        handle.write("bouncing/giphy-a.mp4,bouncing,3,0\nbouncing/")
        for _ in range(10):
            handle.write("x" * 10_000_000)
        handle.write(".mp4,bouncing,3,0\n")
    proc = subprocess.run([sys.executable, "-c", PEAK_RSS, "build-splits", "-w", str(workdir), "--mit", str(folder)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "trainingSet.csv line 2 is longer than any record" in proc.stderr, proc.stderr
    peak = int(proc.stderr.split("peak_rss_mb ")[1].split()[0])
    assert peak < 350, peak  # the line alone is 100 MB; reading it whole (bytes, then text) took ~680 MB


def test_an_hvu_category_without_tags_is_one_sentence(workdir, tmp_path):
    assert_one_line_error(build(workdir, "--hvu", str(hvu_files(tmp_path / "hvu")), "--hvu-category", "event"),
                          "has no tag of category 'event'")


def test_diving48_class_names_are_mmaction2s_label_map(workdir, tmp_path):
    assert build(workdir, "--diving48", str(diving48_files(tmp_path / "d"))).exit_code == 0
    assert (workdir / "splits" / "diving48" / "split1" / "classes.txt").read_text() == "Back+15som+05Twis+FREE\nInward+25som+NoTwis+PIKE\n"


def limit_file_size(limit: int):
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def test_a_full_disk_while_writing_a_split_leaves_the_previous_split_whole(workdir, tmp_path):
    folder = sthv2_files(tmp_path / "ann")
    assert build(workdir, "--sthv2", str(folder)).exit_code == 0
    before = tree(workdir, "splits")
    labels = json.loads((folder / "something-something-v2-labels.json").read_text())
    renamed = {name + " again": i for name, i in labels.items()}  # a new classes.txt (small), a new train.csv
    (folder / "something-something-v2-labels.json").write_text(json.dumps(renamed))
    for name in ("train", "validation"):
        path = folder / f"something-something-v2-{name}.json"
        rows = json.loads(path.read_text())
        path.write_text(json.dumps([{**row, "template": row["template"] + " again"} for row in rows]))
    sizes = {p.name: p.stat().st_size for p in (workdir / "splits" / "sthv2" / "split1").iterdir()}
    limit = sizes["classes.txt"] + 40  # room for the new classes.txt, none for the longer train.csv
    assert sizes["train.csv"] > limit
    proc = subprocess.run(tsnpipe_cmd("build-splits", "-w", str(workdir), "--sthv2", str(folder)), capture_output=True,
                          text=True, preexec_fn=limit_file_size(limit), timeout=120)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert tree(workdir, "splits") == before
    assert not list((workdir / "splits").rglob("*.tmp"))


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    return build_sample_workdir(tmp_path_factory.getbasetemp() / "train_samples")


@pytest.fixture
def sample_copy(samples, tmp_path):
    shutil.copytree(samples, tmp_path / "W", ignore=shutil.ignore_patterns("runs"))
    return tmp_path / "W"


def edit_split(workdir: Path, edit, name: str = "train.csv") -> Path:
    path = workdir / "splits" / "samples" / "split1" / name
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    table = edit(table)
    table.to_csv(path, index=False)
    return path


def multi_label(labels: str):
    def edit(table):
        table["labels"] = table["label"]
        table.loc[1, "labels"] = labels
        return table
    return edit


def set_label(row: int, value: str):
    def edit(table):
        table.loc[row, "label"] = value
        return table
    return edit


@pytest.mark.parametrize(("edit", "words", "extra"), [
    (lambda t: t.iloc[0:0], ["train.csv lists no videos, so there is nothing to train on"], []),
    (set_label(2, ""), ["train.csv line 4: label ''"], []),
    (lambda t: t.assign(video_id=t["video_id"].where(t.index != 1, "")), ["train.csv line 3: video_id ''"], []),
    (set_label(0, "-1"), ["train.csv line 2: label '-1'"], []),
    (multi_label(""), ["train.csv line 3: labels ''"], ["--multi-label"]),
    (multi_label("7"), ["train.csv line 3: labels '7'", "(0..3)"], ["--multi-label"]),
    (multi_label("a;b"), ["train.csv line 3: labels 'a;b'"], ["--multi-label"]),
    (multi_label("0;-1"), ["train.csv line 3: labels '0;-1'"], ["--multi-label"]),
])
def test_hand_edited_split_files_are_one_sentence_naming_file_and_line(sample_copy, edit, words, extra):
    edit_split(sample_copy, edit)
    if extra:
        params = sample_copy / "splits" / "samples" / "split1" / "params.json"
        params.write_text(json.dumps({"multi_label": True}))
    assert_one_line_error(invoke("train", "-w", str(sample_copy), *TINY, *extra), *words)
    assert not list(sample_copy.rglob("best.pt"))


def test_an_empty_val_csv_is_refused_before_training(sample_copy):
    split = sample_copy / "splits" / "samples" / "split1"
    (split / "val.csv").write_text((split / "train.csv").read_text().splitlines()[0] + "\n")
    assert_one_line_error(invoke("train", "-w", str(sample_copy), *TINY), "val.csv lists no videos")
    assert not list(sample_copy.rglob("best.pt"))


@pytest.mark.parametrize(("pairs", "words"), [
    ([[0, 99]], ["flip_pairs names class 99, outside the 4 classes"]),
    ("abc", ["flip_pairs is \"abc\", not a list"]),
    ([[0, 1], [1, 2]], ["flip_pairs names class 1 in two pairs"]),
    ([[0, "x"]], ["flip_pairs holds [0, \"x\"]"]),
])
def test_hand_edited_flip_pairs_are_one_sentence(sample_copy, pairs, words):
    params = sample_copy / "splits" / "samples" / "split1" / "params.json"
    params.write_text(json.dumps({"flip": "swap-labels", "flip_pairs": pairs}))
    assert_one_line_error(invoke("train", "-w", str(sample_copy), *TINY), "params.json", *words)


@pytest.mark.parametrize(("text", "words"), [
    (b'workdir = "W"\nvideos = [1, 2]\n', ["videos = [1, 2] is not a path"]),
    (b'workdir = "W"\nvideos = "v"\n# caf\xe9\n', ["line 3 is not UTF-8"]),
    (b'workdir = "W"\nvideos = "v"\n[train]\nmodalities = ["rgb", "evil"]\n', ["modalities = ['rgb', 'evil'] is not a list"]),
    (b'workdir = "W"\nvideos = "v"\ntrain = 3\n', ["train = 3 is not a table"]),
    (b'workdir = "W"\nvideos = "v"\n[train]\nmodalities = ["rgb"]\nrgb = 3\n', ["[train] rgb = 3 is not a table"]),
])
def test_a_bad_run_config_is_one_sentence(tmp_path, text, words):
    (tmp_path / "v").mkdir()
    (tmp_path / "run.toml").write_bytes(text)
    assert_one_line_error(invoke("run", str(tmp_path / "run.toml")), "run.toml", *words)
    assert not (tmp_path / "W").exists()


def test_a_real_process_refuses_an_empty_annotation_file_in_one_line(workdir, tmp_path):
    folder = mit_files(tmp_path / "mit")
    (folder / "trainingSet.csv").write_text("")
    proc = subprocess.run(tsnpipe_cmd("build-splits", "-w", str(workdir), "--mit", str(folder)), capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert [line for line in proc.stderr.splitlines() if line.strip()] == [
        line for line in proc.stderr.splitlines() if line.startswith("Error: mit split 1 would have no train videos")]


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
