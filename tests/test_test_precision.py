"""Test precision: fp16 on a GPU, fp32 on the CPU by default, and videos whose reduced-precision scores are not
finite scored again in fp32, with a real TSN whose activations overflow fp16's range (65,504)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from packing_data import SAMPLE_IDS, make_workdir
from tsnpipe.stages.scores.evaluate import precision_dtype, score_videos
from tsnpipe.stages.train.data import SnippetDataset
from tsnpipe.stages.train.model import TSN

VIDEOS = SAMPLE_IDS[:3]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    workdir = make_workdir(tmp_path_factory.mktemp("precision") / "W", VIDEOS, count=4, flow=False)
    return SnippetDataset(workdir, VIDEOS, [0, 1, 2], [4, 4, 4], "rgb", 2, 1, 32, mode="test", crops=1)


def overflowing_tsn(scale: float) -> TSN:
    """A TSN whose first convolution is `scale` times larger: its activations pass 65,504 when scale is large."""
    torch.manual_seed(0)
    model = TSN(4, "rgb", "resnet18", partial_bn=False).eval()
    with torch.no_grad():
        model.base.conv1.weight.mul_(scale)
        torch.nn.init.normal_(model.fc.weight, 0, 1e-4)
    return model


@pytest.mark.parametrize("device, asked, expected", [
    ("cpu", None, None), ("cuda", None, torch.float16), ("cpu", "fp16", torch.float16),
    ("cuda", "bf16", torch.bfloat16), ("cuda", "fp32", None),
])
def test_precision_defaults_to_fp16_on_a_gpu_and_fp32_on_the_cpu(device, asked, expected):
    assert precision_dtype(torch.device(device), asked) == expected


def test_videos_that_overflow_fp16_are_scored_again_in_fp32(dataset):
    model = overflowing_tsn(1e6)
    cpu = torch.device("cpu")
    full, _, redone_full = score_videos(model, dataset, cpu, workers=0, dtype=None, progress=False)
    assert np.isfinite(full).all() and redone_full == 0
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.float16):  # the overflow is real: fp16 alone gives no scores
        half = model.snippet_scores(torch.randn(2, 3, 32, 32) + 2)
    assert not torch.isfinite(half).all()
    mixed, _, redone = score_videos(model, dataset, cpu, workers=0, dtype=torch.float16, progress=False)
    assert redone == len(VIDEOS)
    np.testing.assert_allclose(mixed, full, rtol=1e-6)


def test_finite_fp16_scores_are_kept_as_they_are(dataset):
    model = overflowing_tsn(1.0)
    cpu = torch.device("cpu")
    full, _, _ = score_videos(model, dataset, cpu, workers=0, dtype=None, progress=False)
    mixed, _, redone = score_videos(model, dataset, cpu, workers=0, dtype=torch.float16, progress=False)
    assert redone == 0 and np.isfinite(mixed).all()
    assert not np.array_equal(mixed, full)  # these are fp16 scores, not fp32 ones
    np.testing.assert_allclose(mixed, full, atol=1e-3)


def test_test_passes_are_grouped_from_single_videos_read_by_several_workers(dataset):
    from tsnpipe.stages.train.batches import VideoBatches
    from tsnpipe.stages.train.data import make_loader

    single = make_loader(dataset, 1, shuffle=False, workers=2, shard=False, pin=False, prefetch=3)
    passes = list(VideoBatches(single, 2))
    assert len(VideoBatches(single, 2)) == len(passes) == 2
    assert [len(pictures) for pictures, _, _ in passes] == [2, 1]
    assert torch.cat([labels for _, _, labels in passes]).tolist() == [0, 1, 2]  # the dataset's order
    for index, picture in enumerate(picture for pictures, _, _ in passes for picture in pictures):
        assert torch.equal(picture, dataset[index][0])
