"""The test protocol: snippets x crops per video, averaging rule, score file and its accuracies."""

import json
import re

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from tsnpipe.stages.scores.evaluate import score_split, video_scores
from tsnpipe.cli import main
from tsnpipe.stages.scores.files import ClassOrderError, read_scores
from tsnpipe.stages.train.loop import fit
from tsnpipe.stages.train.model import TSN
from tsnpipe.stages.train.recipe import make_params
from train_workdir import build_sample_workdir


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A one-epoch flow checkpoint trained on the sample clips, and the workdir."""
    workdir = build_sample_workdir(tmp_path_factory.getbasetemp() / "train_samples")
    params = make_params(
        "flow", split_dir=str(workdir / "splits" / "samples" / "split1"), store=str(workdir), backbone="resnet18",
        pretrained="none", segments=2, size=32, epochs=1, lr=0.01, batch=3, workers=0, channels_last=False,
    )
    run = tmp_path_factory.mktemp("flow_run")
    fit(params, run, progress=False, log=lambda line: None)
    return run / "last.pt", workdir


def test_score_file_accuracies_match_a_direct_computation(trained, tmp_path):
    checkpoint, workdir = trained
    result = score_split(checkpoint, tmp_path / "flow.pkl", segments=5, crops=3, workers=0, progress=False)
    content = read_scores(tmp_path / "flow.pkl")
    scores, labels = content["scores"], content["labels"]
    assert scores.shape == (7, 4)
    assert content["video_ids"][0] == "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01"
    assert list(labels) == [0, 1, 1, 2, 3, 3, 3]
    assert content["aggregation"]["segments"] == 5 and content["aggregation"]["crops"] == 3
    assert content["aggregation"]["average"] == "raw" and content["aggregation"]["modality"] == "flow"
    predicted = scores.argmax(axis=1)
    top1 = np.mean(predicted == labels)
    recall = [np.mean(predicted[labels == c] == c) for c in range(4)]
    assert result["top1"] == pytest.approx(top1)
    assert result["mean_class"] == pytest.approx(np.mean(recall))
    assert result["top5"] == 1.0  # 4 classes: every label is in the top 5
    report = json.loads((tmp_path / "flow.json").read_text())
    assert report["top1"] == pytest.approx(top1) and report["mean_class"] == pytest.approx(np.mean(recall))


def test_ten_crops_and_one_crop_both_score_every_video(trained, tmp_path):
    checkpoint, _ = trained
    ten = score_split(checkpoint, tmp_path / "ten.pkl", segments=3, crops=10, workers=0, progress=False)
    one = score_split(checkpoint, tmp_path / "one.pkl", segments=3, crops=1, workers=0, progress=False)
    assert ten["videos"] == one["videos"] == 7
    assert not np.allclose(read_scores(ten["scores"])["scores"], read_scores(one["scores"])["scores"])


def test_video_score_is_the_mean_over_crops_then_snippets():
    torch.manual_seed(0)
    model = TSN(5, "rgb", "resnet18", partial_bn=False).eval()
    views = torch.randn(2, 3, 4, 3, 32, 32)  # 2 videos, 3 crops, 4 snippets
    with torch.no_grad():
        each = model.snippet_scores(views.flatten(0, 2)).view(2, 3, 4, 5)
    raw = video_scores(model, views, "raw")
    assert torch.allclose(raw, each.mean(dim=1).mean(dim=1), atol=1e-5)
    soft = video_scores(model, views, "softmax")
    assert torch.allclose(soft, each.softmax(-1).mean(dim=(1, 2)), atol=1e-6)
    assert torch.allclose(soft.sum(dim=1), torch.ones(2), atol=1e-5)


def test_unknown_crop_count_is_refused(trained, tmp_path):
    with pytest.raises(ValueError, match="crops must be 1, 3 or 10"):
        score_split(trained[0], tmp_path / "x.pkl", crops=5)


def reordered_split(workdir, tmp_path):
    """A copy of the sample split whose classes.txt lists the same classes in another order (labels follow)."""
    import pandas as pd

    source = workdir / "splits" / "samples" / "split1"
    classes = (source / "classes.txt").read_text().split()
    swapped = [classes[1], classes[0], *classes[2:]]
    split = tmp_path / "splits" / "folders" / "split1"
    split.mkdir(parents=True)
    (split / "classes.txt").write_text("".join(f"{name}\n" for name in swapped))
    for name in ("train.csv", "test.csv"):
        table = pd.read_csv(source / name)
        table["label"] = [swapped.index(c) for c in table["class_name"]]
        table.to_csv(split / name, index=False)
    return split, classes


def test_a_split_with_the_classes_in_another_order_is_refused(trained, tmp_path):
    checkpoint, workdir = trained
    split, classes = reordered_split(workdir, tmp_path)
    message = f"first label 0 is {classes[0]!r} vs {classes[1]!r}; label 1 is {classes[1]!r} vs {classes[0]!r}"
    with pytest.raises(ClassOrderError, match=re.escape(message)):
        score_split(checkpoint, tmp_path / "x.pkl", store=workdir, split_dir=split, workers=0, progress=False)
    assert not (tmp_path / "x.pkl").exists()


def test_test_command_refuses_another_class_order_in_one_line(trained, tmp_path):
    checkpoint, workdir = trained
    split, classes = reordered_split(workdir, tmp_path)
    result = CliRunner().invoke(main, ["test", "--checkpoint", str(checkpoint), "-w", str(tmp_path), "--store",
                                       str(workdir), "--source", "folders", "--split", "1", "--crops", "1",
                                       "--segments", "2", "--workers", "0", "--no-progress", "--device", "cpu"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    error = result.output.strip().splitlines()[-1]
    assert error.startswith("Error: The checkpoint") and str(split / "classes.txt") in error
    assert f"label 0 is {classes[0]!r} vs {classes[1]!r}" in error


def test_under_bf16_autocast_the_backbone_stays_bf16_and_the_head_and_average_are_fp32():
    torch.manual_seed(0)
    model = TSN(5, "rgb", "resnet18", partial_bn=False).eval()
    torch.nn.init.normal_(model.fc.weight, 0, 0.1)
    views = torch.randn(2, 10, 3, 3, 32, 32)  # 2 videos, 10 crops, 3 snippets
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        scores = video_scores(model, views, "raw")
        features = model.base(views.flatten(0, 2))
    assert features.dtype == torch.bfloat16
    head = features.double() @ model.fc.weight.double().T + model.fc.bias.double()
    expected = head.view(2, 30, 5).mean(dim=1)
    assert scores.dtype == torch.float32
    assert torch.allclose(scores.double(), expected, rtol=1e-5, atol=1e-6)  # a bf16 head is ~4e-3 off


def test_several_videos_per_forward_pass_score_as_one_video_at_a_time(trained, tmp_path):
    checkpoint, _ = trained
    alone = score_split(checkpoint, tmp_path / "one.pkl", segments=3, crops=10, batch=1, workers=0, progress=False)
    together = score_split(checkpoint, tmp_path / "four.pkl", segments=3, crops=10, batch=4, workers=1, progress=False)
    one, four = read_scores(alone["scores"]), read_scores(together["scores"])
    assert list(one["video_ids"]) == list(four["video_ids"])
    assert np.allclose(one["scores"], four["scores"], rtol=1e-4, atol=1e-6)


def test_test_command_scores_in_fp32_on_the_cpu_unless_told_and_says_which(trained, tmp_path):
    checkpoint, workdir = trained
    for asked, said in ((None, "fp32"), ("fp16", "fp16")):
        out = tmp_path / f"{said}.pkl"
        result = CliRunner().invoke(main, ["test", "--checkpoint", str(checkpoint), "-w", str(workdir), "--crops", "1",
                                           "--segments", "2", "--workers", "0", "--no-progress", "--device", "cpu",
                                           "--out", str(out), *(["--precision", asked] if asked else [])])
        assert result.exit_code == 0, result.output
        assert f"test: precision {said};" in result.output
        report = json.loads(out.with_suffix(".json").read_text())
        assert report["precision"] == said and report["fp32_rescored"] == 0
