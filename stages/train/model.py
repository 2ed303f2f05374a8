"""The TSN model: a torchvision backbone applied to every snippet, a dropout + linear head, averaged over segments.

Choices (TSN paper, tsn-pytorch `models.py`), each tested:
- Consensus: every segment's snippet is classified, then the K class scores are averaged (tsn-pytorch);
  mmaction2 averages features first, which is the same thing at test time.
- Input channels: RGB 3 (one frame); RGBDiff 3*L (L differences of L+1 consecutive frames, L=5 by
  default: 15 channels from 6 frames, as tsn-pytorch); Flow 2*L (L consecutive flow pairs interleaved
  x1,y1,...,xL,yL; L=5 by default, 10 as in two-stream).
- Cross-modality init (paper): for Flow and RGBDiff the first conv's weights are the mean over the RGB
  input channels, replicated to the new channel count. Only from pretrained weights: averaging random
  filters would shrink them (the mean of 3 has 1/sqrt(3) of their spread) and give every channel the same
  filter, so with random init the new first conv gets torchvision's own init for its channel count.
- Partial BN (paper, tsn-pytorch `partialBN`): every BatchNorm but the first stays in eval mode while
  training (running mean/var frozen) and its affine weight and bias do not train (tsn-pytorch leaves
  them out of the optimizer; here they get requires_grad=False). Meant for a pretrained backbone: with
  random init the frozen statistics are meaningless, so callers turn it off then.
- Precision: the classifier head runs in fp32 even under autocast (`snippet_scores`).
- Weights: "imagenet" uses torchvision's weights API (`weights="DEFAULT"`), a path loads a state dict
  saved from the same torchvision backbone (its 1000-class head may be present; it is dropped), None
  or "none" starts from random init.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
import torchvision
from torch import nn

from tsnpipe.stages.errors import TsnpipeError

MODALITIES = ("rgb", "rgbdiff", "flow")
BACKBONES = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "vgg16", "mobilenet_v3_large")


class ModelError(TsnpipeError):
    """A model option or weights file that cannot be used."""


def input_channels(modality: str, length: int) -> int:
    """Channels of one snippet: 3 for RGB, 3 per difference for RGBDiff, 2 per flow pair."""
    if modality == "rgb":
        return 3
    if modality == "rgbdiff":
        return 3 * length
    if modality == "flow":
        return 2 * length
    raise ModelError(f"Unknown modality {modality!r}; use one of {', '.join(MODALITIES)}.")


def build_backbone(name: str, weights: str | Path | None) -> tuple[nn.Module, int]:
    """A torchvision classifier with its last linear layer replaced by Identity, and its feature width."""
    try:
        model, head_owner, head_key = torchvision_classifier(name, "DEFAULT" if weights == "imagenet" else None)
    except (OSError, RuntimeError) as error:  # no network, a proxy, a damaged download cache
        raise ModelError(
            f"Cannot get torchvision's ImageNet weights for {name} ({error}); check the network or the torch hub "
            "cache (~/.cache/torch/hub), or pass --pretrained PATH to a saved state dict or --pretrained none."
        ) from error
    if weights not in (None, "none", "imagenet"):
        load_backbone_file(model, Path(weights))
    feature_dim = getattr(head_owner, head_key).in_features
    setattr(head_owner, head_key, nn.Identity())
    return model, feature_dim


def torchvision_classifier(name: str, imagenet: str | None) -> tuple[nn.Module, nn.Module, str]:
    """The torchvision model, and where its last linear layer sits (owner module, attribute name)."""
    if name in ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152"):
        model = getattr(torchvision.models, name)(weights=imagenet)
        head_owner, head_key = model, "fc"
    elif name == "vgg16":
        model = torchvision.models.vgg16(weights=imagenet)
        head_owner, head_key = model.classifier, "6"
    elif name == "mobilenet_v3_large":
        model = torchvision.models.mobilenet_v3_large(weights=imagenet)
        head_owner, head_key = model.classifier, "3"
    else:
        raise ModelError(f"Unknown backbone {name!r}; use one of {', '.join(BACKBONES)}.")
    return model, head_owner, head_key


def load_backbone_file(model: nn.Module, path: Path) -> None:
    """Load a state dict saved from the same torchvision model; a classifier of another shape is skipped."""
    if not Path(path).is_file():
        raise ModelError(f"Cannot load backbone weights from {path}: there is no such file; give --pretrained "
                         "imagenet, none, or the path of a state dict saved with torch.save(model.state_dict(), path).")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # torch's message suggests weights_only=False, i.e. running the file's code
        raise ModelError(f"{path} holds Python objects beyond tensors, which tsnpipe does not load because unpickling "
                         "them could run code; save only the weights with torch.save(model.state_dict(), path).") from None
    except Exception as error:  # damaged, truncated or not a torch file at all: torch raises many kinds
        reason = " ".join(str(error).split("\n")[0].split())[:120] or type(error).__name__
        raise ModelError(f"Cannot load backbone weights from {path} ({reason}); give a state dict file saved with "
                         "torch.save(model.state_dict(), path).") from None
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    if not isinstance(state, dict) or not all(torch.is_tensor(value) for value in state.values()):
        raise ModelError(f"{path} is not a state dict (names -> tensors); save one with "
                         "torch.save(model.state_dict(), path).")
    own = model.state_dict()
    usable = {key: value for key, value in state.items() if key in own and own[key].shape == value.shape}
    missing = [key for key in own if key not in usable and not _is_head(key)]
    if missing:
        raise ModelError(
            f"{path} does not fit this backbone ({len(missing)} tensors missing or of another shape, "
            f"e.g. {missing[0]}); save the state dict of the same torchvision model."
        )
    model.load_state_dict(usable, strict=False)


def _is_head(key: str) -> bool:
    return key.startswith(("fc.", "classifier."))


def first_conv(model: nn.Module) -> tuple[nn.Module, str, nn.Conv2d | nn.Conv3d]:
    """(parent, attribute name, layer) of the first Conv2d (or Conv3d, in a 3D model), so it can be replaced."""
    for parent in model.modules():
        for key, child in parent.named_children():
            if isinstance(child, (nn.Conv2d, nn.Conv3d)):
                return parent, key, child
    raise ModelError("The backbone has no Conv2d layer.")


def cross_modality_conv(conv: nn.Conv2d, channels: int) -> nn.Conv2d:
    """A copy of `conv` taking `channels` inputs, each filter's weights the mean of its RGB weights."""
    new = nn.Conv2d(
        channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
        conv.dilation, conv.groups, conv.bias is not None,
    )
    with torch.no_grad():
        mean = conv.weight.mean(dim=1, keepdim=True)
        new.weight.copy_(mean.expand(-1, channels, -1, -1))
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    return new


def pretrained(weights: str | Path | None) -> bool:
    """Whether a --pretrained value loads weights (a name or a path) rather than starting from random init."""
    return weights not in (None, "none")


def fresh_conv(conv: nn.Conv2d | nn.Conv3d, channels: int, mode: str = "fan_out") -> nn.Conv2d | nn.Conv3d:
    """A randomly initialised copy of `conv`'s shape taking `channels` inputs: He-normal weights (torchvision's
    ResNets, VGG and MobileNet use `mode` fan_out; C3D fan_in) and zero biases, every input channel drawn apart."""
    new = type(conv)(
        channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation, conv.groups,
        conv.bias is not None,
    )
    nn.init.kaiming_normal_(new.weight, mode=mode, nonlinearity="relu")
    if new.bias is not None:
        nn.init.zeros_(new.bias)
    return new


def float32_head(fc: nn.Module, dropout: nn.Module, features: torch.Tensor) -> torch.Tensor:
    """The classifier on float32 features with autocast off, whatever precision the backbone ran in. The meta
    device (shape checks) has no autocast and no arithmetic to keep exact."""
    if features.is_meta:
        return fc(dropout(features))
    with torch.autocast(features.device.type, enabled=False):
        return fc(dropout(features.float()))


class TSN(nn.Module):
    """Temporal Segment Network: input [B, K, C, H, W] (K snippets of C channels), output [B, classes]."""

    def __init__(
        self,
        num_classes: int,
        modality: str = "rgb",
        backbone: str = "resnet50",
        length: int = 1,
        dropout: float = 0.8,
        partial_bn: bool = True,
        weights: str | Path | None = None,
        head_std: float = 0.001,
    ):
        super().__init__()
        self.modality = modality
        self.length = 1 if modality == "rgb" else length
        self.channels = input_channels(modality, self.length)
        self.partial_bn = partial_bn
        self.base, feature_dim = build_backbone(backbone, weights)
        if self.channels != 3:
            parent, key, conv = first_conv(self.base)
            new = cross_modality_conv(conv, self.channels) if pretrained(weights) else fresh_conv(conv, self.channels)
            setattr(parent, key, new)
        self.dropout = nn.Dropout(p=dropout)
        self.fc = nn.Linear(feature_dim, num_classes)
        nn.init.normal_(self.fc.weight, 0, head_std)  # tsn-pytorch's init of the new classifier: N(0, 0.001)
        nn.init.zeros_(self.fc.bias)
        if partial_bn:
            for norm in frozen_norms(self.base):
                norm.weight.requires_grad_(False)
                norm.bias.requires_grad_(False)

    def snippet_scores(self, snippets: torch.Tensor) -> torch.Tensor:
        """Class scores of single snippets: [N, C, H, W] -> [N, classes], always float32.

        Under autocast the backbone runs in bf16 (or fp16), but the classifier runs in fp32 on the
        features made float: a bf16 score keeps three significant digits, too few for averages over
        the 250 views of a test video or for close calls between classes.
        """
        return float32_head(self.fc, self.dropout, self.base(snippets))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, segments = x.shape[:2]
        scores = self.snippet_scores(x.flatten(0, 1))
        return scores.view(batch, segments, -1).mean(dim=1)

    def train(self, mode: bool = True) -> "TSN":
        super().train(mode)
        if mode and self.partial_bn:
            for norm in frozen_norms(self.base):
                norm.eval()
        return self


def frozen_norms(model: nn.Module) -> list[nn.BatchNorm2d]:
    """Every BatchNorm2d but the first: the layers partial BN freezes."""
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    return norms[1:]


def first_layer_params(model: TSN) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(weights, biases) of the backbone's first conv: the layer the lr policy treats apart."""
    _, _, conv = first_conv(model.base)
    return [conv.weight], [conv.bias] if conv.bias is not None else []
