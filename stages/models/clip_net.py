"""What every 3D model shares: a backbone over whole clips, a dropout + linear head, clip averaging.

Input [B, K, C, T, H, W]: K clips of T pictures with C channels (3 for RGB; 2 for flow, the x and y
images of T consecutive pairs stacked along time). Output [B, classes]: the mean of the K clips'
scores (K is 1 in training; the test protocol scores several clips through `snippet_scores`, the
method `tsnpipe test` calls, so one evaluation serves TSN and the 3D models).

Flow input with pretrained weights uses the TSN paper's cross-modality init on the first 3D convolution:
each filter's weights averaged over the RGB channels and replicated to the 2 flow channels. From random
weights the first convolution is drawn afresh for 2 channels with the backbone's own init (C3D: He-normal
over fan_in; torchvision's video ResNets: over fan_out), so the x and y filters differ and keep He's scale.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from tsnpipe.stages.models import CLIP_ARCHS, VIDEO_RESNETS
from tsnpipe.stages.models.c3d import C3D, FEATURES, c3d_names
from tsnpipe.stages.models.video_resnet import build_video_resnet, load_state_file
from tsnpipe.stages.train.model import ModelError, float32_head, fresh_conv, pretrained


def clip_channels(modality: str) -> int:
    if modality == "rgb":
        return 3
    if modality == "flow":
        return 2
    raise ModelError(f"The 3D models take rgb or flow clips, not {modality!r}; use --modality rgb or flow.")


def build_clip_backbone(arch: str, weights: str | Path | None, dropout: float) -> tuple[nn.Module, int]:
    """The backbone of one arch (classifier removed) and its feature width."""
    if arch == "c3d":
        if weights == "kinetics400":
            raise ModelError(
                "torchvision has no Kinetics-400 weights for C3D; use --pretrained none or --pretrained PATH to a C3D state dict."
            )
        model = C3D(3, dropout)
        if weights not in (None, "none"):
            load_state_file(model, Path(weights), head="fc8.", rename=c3d_names)
        return model, FEATURES
    if arch in VIDEO_RESNETS:
        return build_video_resnet(arch, weights)
    raise ModelError(f"Unknown 3D arch {arch!r}; use one of {', '.join(CLIP_ARCHS)}.")


def first_conv3d(model: nn.Module) -> tuple[nn.Module, str, nn.Conv3d]:
    """(parent, attribute name, layer) of the first Conv3d, so it can be replaced."""
    for parent in model.modules():
        for key, child in parent.named_children():
            if isinstance(child, nn.Conv3d):
                return parent, key, child
    raise ModelError("The 3D backbone has no Conv3d layer.")


def cross_modality_conv3d(conv: nn.Conv3d, channels: int) -> nn.Conv3d:
    """A copy of `conv` taking `channels` inputs, each filter's weights the mean of its RGB weights."""
    new = nn.Conv3d(
        channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation, conv.groups,
        conv.bias is not None,
    )
    with torch.no_grad():
        new.weight.copy_(conv.weight.mean(dim=1, keepdim=True).expand(-1, channels, -1, -1, -1))
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    return new


class ClipNet(nn.Module):
    """A 3D classifier: input [B, K, C, T, H, W], output [B, classes] (mean over the K clips)."""

    def __init__(
        self, num_classes: int, arch: str = "r2plus1d_18", modality: str = "rgb", dropout: float = 0.5,
        weights: str | Path | None = None, head_std: float = 0.001,
    ):
        super().__init__()
        self.arch, self.modality = arch, modality
        self.channels = clip_channels(modality)
        # C3D's published dropout sits after fc6 and fc7, inside its backbone; the ResNets have none of their own.
        self.base, feature_dim = build_clip_backbone(arch, weights, dropout)
        if self.channels != 3:
            parent, key, conv = first_conv3d(self.base)
            if pretrained(weights):
                setattr(parent, key, cross_modality_conv3d(conv, self.channels))
            else:
                setattr(parent, key, fresh_conv(conv, self.channels, "fan_in" if arch == "c3d" else "fan_out"))
        self.dropout = nn.Dropout(p=0.0 if arch == "c3d" else dropout)
        self.fc = nn.Linear(feature_dim, num_classes)
        nn.init.normal_(self.fc.weight, 0, head_std)
        nn.init.zeros_(self.fc.bias)

    def snippet_scores(self, clips: torch.Tensor) -> torch.Tensor:
        """Class scores of single clips: [N, C, T, H, W] -> [N, classes], always float32: under autocast the
        backbone runs in bf16 (or fp16) and the classifier in fp32, as TSN's (the test averages many clips)."""
        return float32_head(self.fc, self.dropout, self.base(clips))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, clips = x.shape[:2]
        return self.snippet_scores(x.flatten(0, 1)).view(batch, clips, -1).mean(dim=1)

