"""Multi-label runs (Multi-Moments in Time, HVU): sigmoid + binary cross-entropy training that overfits the sample
clips to mAP 1.0, a test that reports mAP and per-class AP into a score file that says it is multi-label, and a
fusion that reports mAP; real frames, a real TSN."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from tsnpipe.cli import main
from tsnpipe.stages.scores.average_precision import mean_average_precision
from tsnpipe.stages.scores.files import read_scores
from train_workdir import build_sample_workdir

TINY = ["--backbone", "resnet18", "--pretrained", "none", "--segments", "2", "--size", "32", "--batch", "7",
        "--workers", "0", "--no-progress", "--no-channels-last", "--lr", "0.0025", "--lr-steps", "100", "--dropout", "0",
        "--no-partial-bn", "--clip", "0"]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    base = build_sample_workdir(tmp_path_factory.getbasetemp() / "train_samples")
    mine = tmp_path_factory.mktemp("multi_label") / "W"
    shutil.copytree(base / "splits", mine / "splits")
    (mine / "frames").symlink_to(base / "frames")
    split = mine / "splits" / "samples" / "split1"
    table = pd.read_csv(split / "train.csv")
    table["labels"] = [f"{label};{(label + 1) % 4}" if i % 2 else str(label) for i, label in enumerate(table.label)]
    table.to_csv(split / "train.csv", index=False)
    table.to_csv(split / "test.csv", index=False)
    (split / "params.json").write_text(json.dumps({"source": "samples", "multi_label": True}))
    return mine


@pytest.fixture(scope="module")
def trained(workdir):
    result = CliRunner().invoke(main, ["train", "-w", str(workdir), "--modality", "rgb", "--run-name", "ml", "--epochs", "16",
                                       "--loss-weight", "4", *TINY])  # 4 classes: the summed BCE
    assert result.exit_code == 0, result.output
    return workdir / "runs" / "ml", result.output


def test_multi_label_training_overfits_the_clips_to_map_one(trained):
    run, output = trained
    assert "multi_label=True*" in output and " mAP " in output
    best = torch.load(run / "best.pt", weights_only=True)
    assert best["params"]["multi_label"] is True
    assert best["metrics"]["val_mean_class"] == pytest.approx(1.0)  # the run's mAP on its validation (= training) clips


def test_test_reports_map_and_per_class_ap_in_a_multi_label_score_file(trained, workdir, tmp_path):
    run, _ = trained
    out = tmp_path / "ml.pkl"
    result = CliRunner().invoke(main, ["test", "--checkpoint", str(run / "best.pt"), "-w", str(workdir), "--segments", "2",
                                       "--crops", "1", "--out", str(out), "--workers", "0", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "mAP 1.0000" in result.output
    scores = read_scores(out)
    assert scores["aggregation"]["multi_label"] is True
    targets = scores["targets"]
    assert targets.sum() == 7 + 3 and set(np.flatnonzero(targets[1])) == {int(scores["labels"][1]), (int(scores["labels"][1]) + 1) % 4}
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["map"] == pytest.approx(1.0) and set(report["per_class_ap"]) == set(scores["class_names"])


def test_fuse_of_multi_label_score_files_reports_map(trained, workdir, tmp_path):
    run, _ = trained
    paths = []
    for crops in ("1", "3"):
        paths.append(tmp_path / f"ml{crops}.pkl")
        result = CliRunner().invoke(main, ["test", "--checkpoint", str(run / "last.pt"), "-w", str(workdir), "--segments", "3",
                                           "--crops", crops, "--out", str(paths[-1]), "--workers", "0", "--no-progress"])
        assert result.exit_code == 0, result.output
    fused = tmp_path / "fused.pkl"
    result = CliRunner().invoke(main, ["fuse", str(paths[0]), str(paths[1]), "--weights", "1:2", "--out", str(fused)])
    assert result.exit_code == 0, result.output
    first, second = read_scores(paths[0]), read_scores(paths[1])
    expected = mean_average_precision(first["scores"] + 2 * second["scores"], first["targets"])
    line = next(line for line in result.output.splitlines() if line.startswith("fused"))
    assert "mAP" in result.output and float(line.split()[2]) == pytest.approx(100 * expected, abs=0.006)
    assert read_scores(fused)["aggregation"]["multi_label"] is True


def test_report_of_a_multi_label_score_file_lists_per_class_ap(trained, workdir, tmp_path):
    run, _ = trained
    out = tmp_path / "ml.pkl"
    assert CliRunner().invoke(main, ["test", "--checkpoint", str(run / "last.pt"), "-w", str(workdir), "--segments", "2",
                                     "--crops", "1", "--out", str(out), "--workers", "0", "--no-progress"]).exit_code == 0
    result = CliRunner().invoke(main, ["report", str(out)])
    assert result.exit_code == 0, result.output
    assert "multi-label; mAP" in result.output
    table = pd.read_csv(tmp_path / "ml_per_class_ap.csv")
    assert table.positives.sum() == 10 and len(table) == 4 and table.average_precision.between(0, 1).all()


def test_mmit_is_scored_and_its_best_epoch_picked_by_the_mean_over_videos(workdir, tmp_path):
    metrics = pytest.importorskip("sklearn.metrics")
    mmit = tmp_path / "W"
    shutil.copytree(workdir / "splits", mmit / "splits")
    (mmit / "frames").symlink_to((workdir / "frames").resolve())
    split = mmit / "splits" / "samples" / "split1"
    (split / "params.json").write_text(json.dumps({"source": "mmit", "multi_label": True}))
    trained = CliRunner().invoke(main, ["train", "-w", str(mmit), "--modality", "rgb", "--run-name", "mmit", "--epochs", "1",
                                        *TINY])
    assert trained.exit_code == 0, trained.output
    assert "mAP over videos" in trained.output and "loss_weight=160.0*" in trained.output  # mmaction2's MMiT config
    out = tmp_path / "mmit.pkl"
    result = CliRunner().invoke(main, ["test", "--checkpoint", str(mmit / "runs" / "mmit" / "best.pt"), "-w", str(mmit),
                                       "--segments", "2", "--crops", "1", "--out", str(out), "--workers", "0", "--no-progress"])
    assert result.exit_code == 0, result.output
    scores = read_scores(out)
    over_videos = metrics.average_precision_score(scores["targets"], scores["scores"], average="samples")
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["map"] == pytest.approx(over_videos) and report["map_over"] == "videos"
    assert report["map_classes"] == pytest.approx(mean_average_precision(scores["scores"], scores["targets"]))
    assert f"mAP {over_videos:.4f} (over videos)" in result.output
    assert scores["aggregation"]["map_over"] == "videos"


def test_validation_map_is_the_mean_the_data_set_names():
    from tsnpipe.stages.train.loop import evaluate

    metrics = pytest.importorskip("sklearn.metrics")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 6))
    clips = torch.randn(20, 1, 3, 2, 2)
    targets = (torch.rand(20, 6) < 0.3).float()
    targets[torch.arange(20), torch.randint(0, 6, (20,))] = 1
    loader = [(clips[:10], targets[:10]), (clips[10:], targets[10:])]
    with torch.no_grad():
        scores = model(clips).numpy()
    for over, average in (("videos", "samples"), ("classes", "macro")):
        val = evaluate(model, loader, torch.device("cpu"), 6, multi_label=True, map_over=over)
        assert val["mean_class"] == pytest.approx(metrics.average_precision_score(targets.numpy(), scores, average=average),
                                                  abs=1e-6)


def test_the_loss_is_mmaction2s_mean_binary_cross_entropy_times_its_weight():
    from tsnpipe.stages.train.multi_label import dataset_loss_weight, multi_label_loss, summed_multi_label_loss

    torch.manual_seed(0)
    scores = torch.randn(3, 5, dtype=torch.float64) * 3
    targets = (torch.rand(3, 5) < 0.4).double()
    probabilities = torch.sigmoid(scores)  # by hand: -(t log p + (1 - t) log(1 - p)), mean over videos and classes
    by_hand = -(targets * probabilities.log() + (1 - targets) * (1 - probabilities).log()).mean()
    assert float(multi_label_loss(scores, targets, 160.0)) == pytest.approx(160.0 * float(by_hand), rel=1e-12)
    assert float(summed_multi_label_loss(scores, targets, 333.0)) == pytest.approx(3 * 333.0 * float(by_hand), rel=1e-12)
    assert (dataset_loss_weight("mmit"), dataset_loss_weight("hvu"), dataset_loss_weight("sthv2")) == (160.0, 333.0, 1.0)
