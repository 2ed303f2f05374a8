"""`train --pretrained W/runs/<run>/best.pt`: fine-tuning from a tsnpipe checkpoint of another class count."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from tsnpipe.cli import main
from tsnpipe.stages.train.checkpoint import load_checkpoint
from tsnpipe.stages.train.loop import build_model
from tsnpipe.stages.train.recipe import make_params, params_from_dict
from tsnpipe.stages.train.transfer import load_source, read_source
from train_workdir import build_sample_workdir

TINY = ["--backbone", "resnet18", "--segments", "2", "--size", "32", "--batch", "3", "--workers", "0", "--no-progress",
        "--no-channels-last", "--epochs", "1"]
TINY_3D = ["--arch", "mc3_18", "--clip-len", "4", "--stride", "2", "--size", "16", "--batch", "2", "--workers", "0",
           "--no-progress", "--epochs", "1"]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """The sample workdir's split (4 classes) as W/splits/folders, and a second split of its clips in 2 classes
    (wave or not) as W/splits/list."""
    shared = build_sample_workdir(tmp_path_factory.getbasetemp() / "train_samples")
    workdir = tmp_path_factory.mktemp("transfer") / "W"
    shutil.copytree(shared, workdir, ignore=shutil.ignore_patterns("runs", "scores"))
    source = workdir / "splits" / "folders" / "split1"
    (workdir / "splits" / "samples").rename(source.parent)
    target = workdir / "splits" / "list" / "split1"
    target.mkdir(parents=True)
    for name in ("train.csv", "test.csv"):
        table = pd.read_csv(source / name)
        table["label"] = (table["class_name"] == "wave").astype(int)
        table["class_name"] = table["label"].map({0: "other", 1: "wave"})
        table.to_csv(target / name, index=False)
    (target / "classes.txt").write_text("other\nwave\n")
    return workdir


def train(workdir, *args):
    return CliRunner().invoke(main, ["train", "-w", str(workdir), *args])


@pytest.fixture(scope="module")
def source_run(workdir):
    result = train(workdir, "--source", "folders", "--modality", "rgb", "--pretrained", "none", "--run-name", "k4", *TINY)
    assert result.exit_code == 0, result.output
    return workdir / "runs" / "k4" / "best.pt"


def test_every_weight_but_the_classifier_comes_from_the_checkpoint(workdir, source_run):
    state = load_checkpoint(source_run)
    params = make_params("rgb", backbone="resnet18", pretrained=str(source_run))
    model = build_model(params, 2)
    message = load_source(model, read_source(source_run), params, source_run)
    own = model.state_dict()
    assert own["fc.weight"].shape == (2, 512) and state["model"]["fc.weight"].shape == (4, 512)
    others = [key for key in own if not key.startswith("fc.")]
    assert len(others) == len(state["model"]) - 2
    assert all(torch.equal(own[key], state["model"][key]) for key in others)
    assert f"pretrained: {len(others)} tensors" in message and "4 classes" in message
    assert "classifier fc.weight, fc.bias new for 2 classes" in message


def test_training_from_a_checkpoint_of_4_classes_on_2_classes(workdir, source_run):
    result = train(workdir, "--source", "list", "--modality", "rgb", "--pretrained", str(source_run), "--run-name", "k2", *TINY)
    assert result.exit_code == 0, result.output
    assert f"of the TSN resnet18 rgb in {source_run} (epoch 1, 4 classes); classifier fc.weight, fc.bias new for 2 classes" in result.output
    assert "epoch 1/1" in result.output
    assert "head_std=0.01* sgd=plain*" in result.output  # mmaction2's fine-tuning recipe (HMDB51 from Kinetics-400)
    tuned = load_checkpoint(workdir / "runs" / "k2" / "last.pt")
    assert tuned["model"]["fc.weight"].shape == (2, 512) and tuned["class_names"] == ["other", "wave"]
    assert params_from_dict(tuned["params"]).partial_bn  # pretrained weights: partial BN, as from ImageNet


@pytest.mark.parametrize(("args", "message"), [
    (["--modality", "flow"], "holds a TSN resnet18 rgb model and this run trains a TSN resnet18 flow (5 pairs)"),
    (["--modality", "rgb", "--backbone", "resnet34"], "holds a TSN resnet18 rgb model and this run trains a TSN resnet34 rgb"),
    (["--modality", "rgb", "--arch", "mc3_18"], "holds a TSN resnet18 rgb model and this run trains a mc3_18 rgb"),
])
def test_a_checkpoint_of_another_model_is_refused_in_one_sentence(workdir, source_run, args, message):
    rest = [option for option in TINY if option != "resnet18" and option != "--backbone"] if "--backbone" in args else TINY
    rest = TINY_3D[2:] if "--arch" in args else rest
    result = train(workdir, "--source", "list", "--pretrained", str(source_run), "--run-name", "refused", *args, *rest)
    assert result.exit_code == 1 and message in result.output, result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) <= 3
    assert not (workdir / "runs" / "refused" / "last.pt").exists()


def test_a_3d_checkpoint_transfers_too(workdir):
    result = train(workdir, "--source", "folders", "--modality", "rgb", "--pretrained", "none", "--run-name", "mc3_k4", *TINY_3D)
    assert result.exit_code == 0, result.output
    source = workdir / "runs" / "mc3_k4" / "best.pt"
    result = train(workdir, "--source", "list", "--modality", "rgb", "--pretrained", str(source), "--run-name", "mc3_k2", *TINY_3D)
    assert result.exit_code == 0, result.output
    assert "of the mc3_18 rgb in" in result.output and "new for 2 classes" in result.output
    before, after = load_checkpoint(source)["model"], load_checkpoint(workdir / "runs" / "mc3_k2" / "best.pt")["model"]
    assert after["fc.weight"].shape[0] == 2 and before["fc.weight"].shape[0] == 4


def test_a_fine_tuned_head_and_optimiser_follow_mmaction2_and_a_fresh_run_tsn_pytorch(workdir, source_run):
    from tsnpipe.stages.train.loop import optimizer_groups

    torch.manual_seed(0)
    for pretrained, std, groups in ((str(source_run), 0.01, 1), ("none", 0.001, 4)):
        params = make_params("rgb", backbone="resnet18", pretrained=pretrained)
        model = build_model(params, 400, weights="none")
        assert float(model.fc.weight.detach().std()) == pytest.approx(std, rel=0.02)  # 204,800 draws of N(0, std)
        assert len(optimizer_groups(model, params)) == groups
    params = make_params("rgb", backbone="resnet18", pretrained=str(source_run), head_std=0.001, sgd="tsn")
    assert (params.head_std, params.sgd) == (0.001, "tsn")  # tsn-pytorch's, by name
    plain = optimizer_groups(build_model(params, 4, weights="none"), make_params("rgb", pretrained="none", sgd="plain"))
    assert plain[0]["weight_decay"] == 5e-4 and plain[0]["lr"] == 0.001
