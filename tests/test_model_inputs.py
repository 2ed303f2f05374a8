"""What the models are fed and how their first layer starts: C3D's Sports-1M input and its two key namings,
the video presets' resize, and the first convolution of random-init flow and RGBDiff models."""

import math

import pytest
import torch
import torchvision
import torchvision.transforms.functional as TF
from torch import nn

from tsnpipe.stages.errors import TsnpipeError
from tsnpipe.stages.models.c3d import C3D, JFZHANG95_NAMES
from tsnpipe.stages.models.clip_net import ClipNet
from tsnpipe.stages.train.clips import KINETICS_MEAN, KINETICS_STD, SPORTS1M_BGR_MEAN, dataset_for
from tsnpipe.stages.train.data import read_split
from tsnpipe.stages.train.model import TSN
from tsnpipe.stages.train.recipe import make_params
from train_workdir import build_sample_workdir


@pytest.fixture(scope="session")
def workdir(tmp_path_factory):
    return build_sample_workdir(tmp_path_factory.getbasetemp() / "train_samples")


@pytest.fixture(scope="module")
def c3d_files(tmp_path_factory):
    """One C3D's weights saved under our names and under jfzhang95's `features.N` / `classifier.N` (with his
    487-class Sports-1M fc8), as the files users download are named."""
    folder = tmp_path_factory.mktemp("c3d")
    torch.manual_seed(1)
    ours = C3D(3).state_dict()
    ours["fc8.weight"], ours["fc8.bias"] = torch.randn(487, 4096), torch.randn(487)
    theirs = {}
    for key, tensor in ours.items():
        old = next(old for old, new in JFZHANG95_NAMES.items() if key.startswith(new))
        theirs[old + key.split(".", 1)[1]] = tensor
    assert "features.18.weight" in theirs and "classifier.3.bias" in theirs
    torch.save(ours, folder / "ours.pt")
    torch.save(theirs, folder / "jfzhang95.pth")
    return {"ours": folder / "ours.pt", "jfzhang95": folder / "jfzhang95.pth", "state": ours}


@pytest.mark.parametrize("naming", ["ours", "jfzhang95"])
def test_a_c3d_file_in_either_naming_loads_every_layer(c3d_files, naming):
    model = ClipNet(4, "c3d", "rgb", weights=str(c3d_files[naming]))
    own = model.base.state_dict()
    for key, tensor in c3d_files["state"].items():
        if not key.startswith("fc8."):
            assert torch.equal(own[key], tensor), key
    assert model.fc.out_features == 4


def c3d_params(workdir, **overrides):
    values = dict(split_dir=str(workdir / "splits" / "samples" / "split1"), store=str(workdir), arch="c3d",
                  clip_len=16, stride=2, size=32, batch=2, workers=0)
    return make_params("rgb", **{**values, **overrides})


def test_c3d_input_follows_the_weights_provenance_or_the_option(workdir, c3d_files):
    assert c3d_params(workdir, pretrained="none").c3d_input == "kinetics"
    assert c3d_params(workdir, pretrained=str(c3d_files["jfzhang95"])).c3d_input == "sports1m"
    assert c3d_params(workdir, pretrained=str(c3d_files["ours"])).c3d_input == "kinetics"
    assert c3d_params(workdir, pretrained=str(c3d_files["ours"]), c3d_input="sports1m").c3d_input == "sports1m"
    with pytest.raises(TsnpipeError, match="--c3d-input sports1m is not for --arch r3d_18"):
        c3d_params(workdir, arch="r3d_18", clip_len=4, pretrained="none", c3d_input="sports1m")


def centre_view(workdir, antialias: bool) -> torch.Tensor:
    """The first test video's centre clip as `dataset_for` cuts it at size 32 (clip_len 16, stride 2), resized
    by torchvision's own `resize`: float [T, 3, 32, 32] in 0..255, RGB."""
    from tsnpipe.stages.store.reader import open_reader
    from tsnpipe.stages.train.clips import clip_positions, clip_span, even_starts, resize_for
    from tsnpipe.stages.train.data import read_stack
    from tsnpipe.stages.train.transforms import view_boxes

    _, test_table, _ = read_split(workdir / "splits" / "samples" / "split1")
    row = test_table.iloc[0]
    start = even_starts(int(row["frames"]), 1, clip_span(16, 2))[0]
    stack = read_stack(open_reader(workdir), row["video_id"], clip_positions(start, 16, 2, int(row["frames"])), "rgb")
    height, width = resize_for(32)
    assert stack.shape[-2] > 1.5 * height  # a real downscale, where antialiasing shows
    resized = TF.resize(stack, [height, width], interpolation=TF.InterpolationMode.BILINEAR, antialias=antialias)
    top, left, _ = view_boxes(height, width, 32, 1)[0]
    return resized[..., top:top + 32, left:left + 32].float()


def first_val_clip(workdir, **overrides) -> torch.Tensor:
    _, test_table, _ = read_split(workdir / "splits" / "samples" / "split1")
    return dataset_for(c3d_params(workdir, **overrides), test_table, "val")[0][0][0]


def test_sports1m_c3d_clips_are_bgr_0_255_minus_the_channel_means(workdir, c3d_files):
    """Sports-1M C3D weights get 0-255 pixels in BGR order, each channel minus its mean, unscaled (values in the
    hundreds, not ~57x smaller), resized as cv2.resize does for jfzhang95's port: without antialiasing."""
    view = centre_view(workdir, antialias=False)
    bgr_mean = torch.tensor(SPORTS1M_BGR_MEAN).view(1, 3, 1, 1)
    expected = (view.flip(1) - bgr_mean).transpose(0, 1)
    for overrides in (dict(pretrained="none", c3d_input="sports1m"), dict(pretrained=str(c3d_files["jfzhang95"]))):
        sports = first_val_clip(workdir, **overrides)
        assert sports.shape == (3, 16, 32, 32)
        assert torch.equal(sports, expected), overrides
    assert sports.abs().max() > 50 and first_val_clip(workdir, pretrained="none").abs().max() < 3


@pytest.mark.parametrize("arch, antialias", [("r3d_18", False), ("c3d", True)])
def test_clips_resize_as_the_weights_were_made(workdir, arch, antialias):
    """torchvision's VideoClassification preset (which made the video ResNets' Kinetics weights) resizes uint8
    video bilinearly without antialiasing, and so must their clips; C3D with its own (Kinetics) input keeps the
    antialiased resize."""
    clip = first_val_clip(workdir, arch=arch, pretrained="none")
    mean, std = torch.tensor(KINETICS_MEAN).view(1, 3, 1, 1), torch.tensor(KINETICS_STD).view(1, 3, 1, 1)
    expected = ((centre_view(workdir, antialias) / 255.0 - mean) / std).transpose(0, 1)
    tolerance = 1e-5 if not antialias else 0.02  # torchvision rounds its antialiased uint8 resize to whole levels
    assert torch.allclose(clip, expected, atol=tolerance), (clip - expected).abs().max()


def conv_std(conv: nn.Module) -> float:
    return conv.weight.std().item()


@pytest.mark.parametrize("modality, length", [("flow", 5), ("rgbdiff", 5)])
def test_tsn_from_random_weights_draws_its_first_conv_for_its_channels(modality, length):
    """Cross-modality averaging belongs to pretrained filters; averaging random ones would leave 1/sqrt(3) of
    He's scale and the same filter on every channel."""
    torch.manual_seed(0)
    conv = TSN(3, modality, "resnet18", length, weights="none").base.conv1
    weight = conv.weight
    assert weight.shape[1] == (2 * length if modality == "flow" else 3 * length)
    assert not torch.equal(weight[:, 0], weight[:, 1])
    he = math.sqrt(2.0 / (64 * 7 * 7))  # torchvision's ResNet init: He-normal over fan_out
    assert 0.95 < conv_std(conv) / he < 1.05


@pytest.mark.parametrize("arch, fan", [("c3d", 2 * 27), ("r3d_18", 64 * 3 * 7 * 7)])
def test_3d_flow_from_random_weights_draws_its_first_conv_for_two_channels(arch, fan):
    torch.manual_seed(0)
    model = ClipNet(4, arch, "flow", weights="none")
    conv = next(m for m in model.base.modules() if isinstance(m, nn.Conv3d))
    assert conv.in_channels == 2
    assert not torch.equal(conv.weight[:, 0], conv.weight[:, 1])  # x and y filters drawn apart
    assert 0.95 < conv_std(conv) / math.sqrt(2.0 / fan) < 1.05


def test_tsn_from_pretrained_weights_still_averages_the_rgb_filters(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), path)
    rgb = torch.load(path, weights_only=True)["conv1.weight"]
    weight = TSN(3, "flow", "resnet18", 5, weights=path).base.conv1.weight
    assert torch.allclose(weight[:, 3], rgb.mean(dim=1), atol=1e-7)


def test_c3d_input_is_a_train_option_refused_in_one_line_for_other_archs(workdir):
    from click.testing import CliRunner

    from tsnpipe.cli import main

    result = CliRunner().invoke(main, ["train", "-w", str(workdir), "--modality", "rgb", "--arch", "r3d_18",
                                       "--pretrained", "none", "--c3d-input", "sports1m", "--run-name", "c3d_input_refused"])
    assert result.exit_code == 1, result.output
    assert "--c3d-input sports1m is not for --arch r3d_18" in result.output and "Traceback" not in result.output
    assert not (workdir / "runs" / "c3d_input_refused").exists()
