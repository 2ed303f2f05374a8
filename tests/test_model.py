"""The TSN model: input channels per modality, consensus, cross-modality init, partial BN, weight files."""

import pytest
import torch
import torchvision

from tsnpipe.stages.errors import TsnpipeError
from tsnpipe.stages.train.model import TSN, first_conv, frozen_norms


@pytest.mark.parametrize(
    "modality, length, channels",
    [("rgb", 1, 3), ("rgb", 5, 3), ("rgbdiff", 5, 15), ("rgbdiff", 2, 6), ("flow", 5, 10), ("flow", 10, 20)],
)
def test_input_channels_follow_modality_and_stack_length(modality, length, channels):
    model = TSN(7, modality, "resnet18", length, dropout=0.5, partial_bn=False).eval()
    assert first_conv(model.base)[2].in_channels == channels
    with torch.no_grad():
        out = model(torch.randn(2, 3, channels, 32, 32))
    assert out.shape == (2, 7)


def test_mobilenet_backbone_gives_class_scores():
    model = TSN(4, "flow", "mobilenet_v3_large", 5, partial_bn=False).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 2, 10, 32, 32)).shape == (1, 4)


def test_consensus_averages_the_segment_scores():
    model = TSN(5, "rgb", "resnet18", partial_bn=False).eval()
    clips = torch.randn(2, 3, 3, 32, 32)
    with torch.no_grad():
        per_snippet = model.snippet_scores(clips.flatten(0, 1)).view(2, 3, 5)
        assert torch.allclose(model(clips), per_snippet.mean(dim=1), atol=1e-6)


@pytest.fixture()
def resnet18_file(tmp_path):
    """A full torchvision resnet18 state dict (1000-class head included), as users save one."""
    torch.manual_seed(0)
    path = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), path)
    return path


def test_weights_file_initialises_the_backbone(resnet18_file):
    saved = torch.load(resnet18_file, weights_only=True)
    model = TSN(3, "rgb", "resnet18", weights=resnet18_file)
    assert torch.equal(model.base.layer3[1].conv2.weight, saved["layer3.1.conv2.weight"])
    assert torch.equal(model.base.conv1.weight, saved["conv1.weight"])


@pytest.mark.parametrize("modality, length", [("flow", 5), ("flow", 10), ("rgbdiff", 5)])
def test_cross_modality_init_replicates_the_mean_of_the_rgb_filters(resnet18_file, modality, length):
    rgb = torch.load(resnet18_file, weights_only=True)["conv1.weight"]
    model = TSN(3, modality, "resnet18", length, weights=resnet18_file)
    weight = model.base.conv1.weight
    assert weight.shape[1] == model.channels
    for channel in range(model.channels):
        assert torch.allclose(weight[:, channel], rgb.mean(dim=1), atol=1e-7)


def test_weights_file_of_another_backbone_is_refused(resnet18_file):
    with pytest.raises(TsnpipeError, match="does not fit this backbone"):
        TSN(3, "rgb", "resnet34", weights=resnet18_file)


def test_unknown_backbone_is_refused():
    with pytest.raises(TsnpipeError, match="Unknown backbone"):
        TSN(3, "rgb", "resnet9")


def test_partial_bn_trains_only_the_first_batchnorm():
    torch.manual_seed(0)
    model = TSN(4, "flow", "resnet18", 5, dropout=0.7, partial_bn=True)
    norms = [m for m in model.base.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    frozen_before = [(n.running_mean.clone(), n.running_var.clone(), n.weight.clone()) for n in norms[1:]]
    first_before = norms[0].running_mean.clone()
    conv_before = model.base.layer1[0].conv1.weight.clone()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model.train()
    loss = torch.nn.functional.cross_entropy(model(torch.randn(4, 3, 10, 32, 32)), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    optimizer.step()
    assert frozen_norms(model.base) == norms[1:]
    for norm, (mean, var, weight) in zip(norms[1:], frozen_before):
        assert not norm.training
        assert torch.equal(norm.running_mean, mean) and torch.equal(norm.running_var, var)
        assert torch.equal(norm.weight, weight)
    assert norms[0].training and not torch.equal(norms[0].running_mean, first_before)
    assert not torch.equal(model.base.layer1[0].conv1.weight, conv_before)


def test_without_partial_bn_every_batchnorm_updates():
    model = TSN(4, "rgb", "resnet18", partial_bn=False).train()
    norm = model.base.layer4[1].bn2
    before = norm.running_mean.clone()
    model(torch.randn(2, 3, 3, 32, 32))
    assert not torch.equal(norm.running_mean, before)
