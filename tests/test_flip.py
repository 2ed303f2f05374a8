"""The horizontal flip that knows the data set (`train --flip on|off|swap-labels`): in training a flipped
clip of a left/right class trains as its mirror class, and in the 10-crop test the mirrored views are read
with the classes swapped back (or dropped); real frames of the sample clips, a real TSN."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from tsnpipe.cli import main
from tsnpipe.stages.scores.evaluate import video_scores
from tsnpipe.stages.train.flip import mirrored_views
from tsnpipe.stages.scores.files import read_scores
from tsnpipe.stages.train.data import table_dataset
from tsnpipe.stages.train.decode import EncodedSnippets, prepare_encoded
from tsnpipe.stages.train.flip import FlipRule, label_permutation, resolve_flip
from tsnpipe.stages.train.model import TSN
from tsnpipe.stages.train.transforms import video_views
from train_workdir import build_sample_workdir

LEFT_TO_RIGHT, RIGHT_TO_LEFT = 1, 2  # "Pushing something from left to right" / "... right to left"
PAIRS = [[LEFT_TO_RIGHT, RIGHT_TO_LEFT]]
TINY = ["--backbone", "resnet18", "--pretrained", "none", "--segments", "2", "--size", "32", "--batch", "3",
        "--workers", "0", "--no-progress", "--no-channels-last", "--epochs", "1"]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return build_sample_workdir(tmp_path_factory.getbasetemp() / "train_samples")


def one_clip_table(workdir, label: int) -> pd.DataFrame:
    table = pd.read_csv(workdir / "splits" / "samples" / "split1" / "train.csv").head(1)
    return table.assign(label=label)


def drawn(dataset, draws: int = 24) -> list[tuple[bool, int]]:
    torch.manual_seed(0)
    return [tuple(dataset[0][1:]) for _ in range(draws)]


def test_a_flipped_left_to_right_clip_trains_as_right_to_left(workdir):
    dataset = table_dataset(workdir, one_clip_table(workdir, LEFT_TO_RIGHT), "rgb", 2, 1, 32, "train")
    dataset.flip_rule = FlipRule("swap-labels", label_permutation(4, PAIRS))
    items = drawn(dataset)
    assert {flip for flip, _ in items} == {True, False}
    assert all(label == (RIGHT_TO_LEFT if flip else LEFT_TO_RIGHT) for flip, label in items)


def test_flip_on_keeps_the_label_and_off_never_flips(workdir):
    dataset = table_dataset(workdir, one_clip_table(workdir, LEFT_TO_RIGHT), "rgb", 2, 1, 32, "train")
    on = drawn(dataset)
    assert {flip for flip, _ in on} == {True, False} and {label for _, label in on} == {LEFT_TO_RIGHT}
    dataset.flip_rule = FlipRule("off")
    assert set(drawn(dataset)) == {(False, LEFT_TO_RIGHT)}


def test_gpu_decode_path_swaps_labels_of_the_clips_it_flips(workdir):
    dataset = table_dataset(workdir, one_clip_table(workdir, LEFT_TO_RIGHT), "rgb", 2, 1, 32, "train", kind=EncodedSnippets)
    rule = FlipRule("swap-labels", label_permutation(4, PAIRS))
    videos, labels = zip(*[dataset[0] for _ in range(16)])
    torch.manual_seed(0)
    flips_seen = []
    for video, label in zip(videos, labels):
        state = torch.get_rng_state()
        _, out = prepare_encoded(([video], torch.tensor([label])), torch.device("cpu"), "rgb", 2, 1, 32, True, flip_rule=rule)
        torch.set_rng_state(state)  # the same draw without the rule: was this clip flipped?
        plain, _ = prepare_encoded(([video], torch.tensor([label])), torch.device("cpu"), "rgb", 2, 1, 32, True)
        torch.set_rng_state(state)
        ref, _ = prepare_encoded(([video], torch.tensor([label])), torch.device("cpu"), "rgb", 2, 1, 32, True, flip_rule=FlipRule("off"))
        flipped = not torch.equal(plain, ref)
        flips_seen.append(flipped)
        assert int(out[0]) == (RIGHT_TO_LEFT if flipped else LEFT_TO_RIGHT)
    assert set(flips_seen) == {True, False}


def test_ten_crop_test_reads_mirrored_views_with_swapped_classes_or_drops_them(workdir):
    torch.manual_seed(0)
    model = TSN(4, "rgb", "resnet18", 1, 0.5, False, weights="none").eval()
    stack = table_dataset(workdir, one_clip_table(workdir, 0), "rgb", 3, 1, 32, "test", crops=10)[0][0]
    views = video_views(stack[None], "rgb", 3, 1, 32, 10)
    per_view = model.snippet_scores(views.flatten(0, 2)).detach().view(1, 10, 3, 4)
    mirrored = mirrored_views(10)
    assert mirrored == [False] * 5 + [True] * 5
    perm = label_permutation(4, PAIRS)
    expected = torch.cat([per_view[:, :5], per_view[:, 5:][..., perm]], dim=1).mean(dim=1).mean(dim=1)
    got = video_scores(model, views, "raw", FlipRule("swap-labels", perm))
    assert torch.allclose(got, expected, atol=1e-5)
    assert not torch.allclose(got, video_scores(model, views, "raw", FlipRule("on")), atol=1e-5)
    off = video_scores(model, views, "raw", FlipRule("off"))
    assert torch.allclose(off, per_view[:, :5].mean(dim=1).mean(dim=1), atol=1e-5)


def test_swap_labels_needs_pairs_from_the_split(tmp_path):
    (tmp_path / "params.json").write_text(json.dumps({"source": "sthv2", "flip": "swap-labels", "flip_pairs": [[1, 2]]}))
    assert resolve_flip(None, tmp_path) == ("swap-labels", [[1, 2]])
    assert resolve_flip("on", tmp_path) == ("on", [])
    (tmp_path / "params.json").write_text(json.dumps({"source": "ucf101"}))
    assert resolve_flip(None, tmp_path) == ("on", [])
    with pytest.raises(Exception, match="names no left/right class pairs to swap; use --flip on or --flip off"):
        resolve_flip("swap-labels", tmp_path)


def test_the_split_sets_the_default_flip_and_the_run_and_score_file_record_it(workdir, tmp_path):
    mine = tmp_path / "W"
    shutil.copytree(workdir / "splits", mine / "splits")
    (mine / "frames").symlink_to(workdir / "frames")
    split = mine / "splits" / "samples" / "split1"
    runner = CliRunner()
    refused = runner.invoke(main, ["train", "-w", str(mine), "--modality", "rgb", "--flip", "swap-labels", "--run-name", "no", *TINY])
    assert refused.exit_code == 1 and "names no left/right class pairs" in refused.output and "Traceback" not in refused.output
    (split / "params.json").write_text(json.dumps({"source": "samples", "flip": "swap-labels", "flip_pairs": [[0, 1]]}))
    result = runner.invoke(main, ["train", "-w", str(mine), "--modality", "rgb", "--run-name", "swap", *TINY])
    assert result.exit_code == 0, result.output
    assert "flip=swap-labels*" in result.output
    checkpoint = torch.load(mine / "runs" / "swap" / "last.pt", weights_only=True)
    assert checkpoint["params"]["flip"] == "swap-labels" and checkpoint["params"]["flip_pairs"] == [[0, 1]]
    out = tmp_path / "swap.pkl"
    result = runner.invoke(main, ["test", "--checkpoint", str(mine / "runs" / "swap" / "last.pt"), "-w", str(mine),
                                  "--segments", "2", "--out", str(out), "--workers", "0", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "test: flip swap-labels: mirrored crops read with the left/right classes swapped" in result.output
    aggregation = read_scores(out)["aggregation"]
    assert aggregation["flip"] == "swap-labels" and aggregation["mirrored_views"].startswith("mirrored views read with")
    result = runner.invoke(main, ["train", "-w", str(mine), "--modality", "rgb", "--flip", "off", "--run-name", "off", *TINY])
    assert result.exit_code == 0 and "flip=off " in result.output, result.output


def with_params(path, out, **changes):
    """A copy of a checkpoint with some recorded params changed."""
    state = torch.load(path, map_location="cpu", weights_only=False)
    state["params"] = {**state["params"], **changes}
    torch.save(state, out)
    return out


def test_something_something_trains_and_tests_as_the_quoted_mmaction2_configs(workdir, tmp_path):
    mine = tmp_path / "W"
    shutil.copytree(workdir / "splits", mine / "splits")
    (mine / "frames").symlink_to(workdir / "frames")
    split = mine / "splits" / "samples" / "split1"
    (split / "params.json").write_text(json.dumps({"source": "sthv2", "flip": "swap-labels", "flip_pairs": [[0, 1]]}))
    runner = CliRunner()
    trained = runner.invoke(main, ["train", "-w", str(mine), "--modality", "rgb", "--run-name", "v2", *TINY])
    assert trained.exit_code == 0, trained.output
    assert "protocol=mmaction2-sthv2*" in trained.output and "flip=off*" in trained.output  # the V2 config never flips
    checkpoint = mine / "runs" / "v2" / "last.pt"
    out = tmp_path / "v2.pkl"
    tested = runner.invoke(main, ["test", "--checkpoint", str(checkpoint), "-w", str(mine), "--out", str(out),
                                  "--workers", "0", "--no-progress"])
    assert tested.exit_code == 0, tested.output
    aggregation = read_scores(out)["aggregation"]  # the training's 2 snippets x ThreeCrop at 8/7 of the 32 crop
    assert (aggregation["segments"], aggregation["crops"], aggregation["crop_size"]) == (2, 3, 36)
    # V1: TenCrop of a run that never flipped, the mirrored views averaged as they are (as a flip "on" run's)
    v1 = with_params(checkpoint, tmp_path / "v1.pt", protocol="mmaction2-sthv1")
    plain = with_params(checkpoint, tmp_path / "plain.pt", protocol="tsn", flip="on")
    scores = {}
    for name, path in (("v1", v1), ("plain", plain)):
        result = runner.invoke(main, ["test", "--checkpoint", str(path), "-w", str(mine), "--segments", "2", "--crops", "10",
                                      "--out", str(tmp_path / f"{name}.pkl"), "--workers", "0", "--no-progress"])
        assert result.exit_code == 0, result.output
        scores[name] = read_scores(tmp_path / f"{name}.pkl")["scores"]
    assert np.array_equal(scores["v1"], scores["plain"])
    dropped = runner.invoke(main, ["test", "--checkpoint", str(checkpoint), "-w", str(mine), "--segments", "2", "--crops", "10",
                                   "--out", str(tmp_path / "dropped.pkl"), "--workers", "0", "--no-progress"])
    assert dropped.exit_code == 0 and "mirrored crops dropped" in dropped.output  # V2's flip off, ten crops asked
    assert not np.allclose(read_scores(tmp_path / "dropped.pkl")["scores"], scores["v1"])
    swapped = runner.invoke(main, ["train", "-w", str(mine), "--modality", "rgb", "--run-name", "tsn", "--protocol", "tsn", *TINY])
    assert swapped.exit_code == 0 and "flip=swap-labels*" in swapped.output, swapped.output
