"""Which list chose best.pt: metrics.csv records it, `train` says it, and `test` says so in one line when
it is about to score the very list that picked the checkpoint's epoch (an optimistic accuracy)."""

import csv
import shutil

import pytest
from click.testing import CliRunner

from tsnpipe.cli import main
from train_workdir import build_sample_workdir

TINY = ["--backbone", "resnet18", "--pretrained", "none", "--segments", "2", "--size", "32", "--batch", "3",
        "--workers", "0", "--no-progress", "--no-channels-last", "--epochs", "1", "--modality", "rgb"]
NOTE = "was picked as best on this same test list"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """The sample workdir with a second split whose val.csv is a list of its own."""
    shared = build_sample_workdir(tmp_path_factory.getbasetemp() / "train_samples")
    workdir = tmp_path_factory.mktemp("best_list")
    for name in ("frames", "splits"):
        shutil.copytree(shared / name, workdir / name)
    split1, split2 = workdir / "splits" / "samples" / "split1", workdir / "splits" / "samples" / "split2"
    shutil.copytree(split1, split2)
    shutil.copy(split1 / "test.csv", split2 / "val.csv")
    return workdir


def val_lists(run):
    with open(run / "metrics.csv", newline="") as handle:
        return [row["val_list"] for row in csv.DictReader(handle)]


@pytest.mark.parametrize("split, chosen_on, noted", [("1", "test.csv", True), ("2", "val.csv", False)])
def test_the_run_records_which_list_chose_best_and_test_notes_an_optimistic_score(workdir, split, chosen_on, noted):
    runner = CliRunner()
    run = workdir / "runs" / f"split{split}"
    result = runner.invoke(main, ["train", "-w", str(workdir), "--split", split, "--run-name", run.name, *TINY])
    assert result.exit_code == 0, result.output
    assert val_lists(run) == [chosen_on]
    assert f"(chosen on {chosen_on})" in result.output
    scored = runner.invoke(main, ["test", "--checkpoint", str(run / "best.pt"), "-w", str(workdir), "--segments", "2",
                                  "--crops", "1", "--workers", "0", "--no-progress"])
    assert scored.exit_code == 0, scored.output
    assert (NOTE in scored.output) is noted
    assert sum(NOTE in line for line in scored.output.splitlines()) == int(noted)  # one line, not one per video
