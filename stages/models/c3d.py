"""C3D (Tran et al., "Learning Spatiotemporal Features with 3D Convolutional Networks", ICCV 2015).

The published layout, layer for layer (paper Fig. 3, and the Caffe `c3d_sport1m` prototxt the
PyTorch ports follow): 8 convolutions, all 3x3x3 with stride 1 and padding 1, and 5 max-pools;
pool1 is 1x2x2 (no temporal pooling so early motion is kept), pools 2-5 are 2x2x2; pool5 pads the
7x7 picture to give 4x4. A 3x16x112x112 clip leaves pool5 as 512x1x4x4 = 8,192 values, then fc6 and
fc7 (4,096 each, ReLU, dropout 0.5), then the classifier (fc8, in `ClipNet`).

| layer | conv1a | pool1 | conv2a | pool2 | conv3a,b | pool3 | conv4a,b | pool4 | conv5a,b | pool5 | fc6 | fc7 |
| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |
| width | 64 | 1x2x2 | 128 | 2x2x2 | 256 | 2x2x2 | 512 | 2x2x2 | 512 | 2x2x2 | 4096 | 4096 |

One addition: an adaptive average pool to 1x4x4 between pool5 and fc6. At the published input size it
is the identity (pool5 already gives 1x4x4), so the published network is unchanged; it lets smaller
crops or other clip lengths (tests, quick trials) reach fc6 with the same 8,192 inputs.

From scratch, convolutions and fc6/fc7 start from He-normal weights and zero biases (the PyTorch
ports do the same): with PyTorch's default init the signal fades over ten layers without batch norm.

State dict keys follow the common PyTorch port (`conv1`, `conv2`, `conv3a` ... `fc6`, `fc7`). A file in
the other naming, `features.N` / `classifier.N` (the Sports-1M C3D jfzhang95's pytorch-video-recognition
loads, `__load_pretrained_weights` in its network/C3D_model.py), is renamed on loading (`JFZHANG95_NAMES`);
either loads with `--pretrained PATH`, its `fc8` skipped.

The input the weights expect (`c3d_input_for`, `--c3d-input`): from scratch, or a C3D trained by tsnpipe,
"kinetics" (RGB /255, Kinetics mean and std, as the video ResNets); the Sports-1M weights, "sports1m"
(0..255 in BGR order minus the per-channel means, train.clips). A file in jfzhang95's naming is taken to be
his Sports-1M weights; a file in our naming can be either, so `--c3d-input sports1m` says so for a Sports-1M
file saved under our names.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

FEATURES = 4096
# jfzhang95's names -> ours: his nn.Sequential indices of the convolutions and the fully connected layers.
JFZHANG95_NAMES = {
    "features.0.": "conv1.", "features.3.": "conv2.", "features.6.": "conv3a.", "features.8.": "conv3b.",
    "features.11.": "conv4a.", "features.13.": "conv4b.", "features.16.": "conv5a.", "features.18.": "conv5b.",
    "classifier.0.": "fc6.", "classifier.3.": "fc7.", "classifier.6.": "fc8.",
}


def jfzhang95_naming(state: dict) -> bool:
    """Whether a state dict uses the `features.N` / `classifier.N` names."""
    return any(key.startswith(("features.", "classifier.")) for key in state)


def c3d_names(state: dict) -> dict:
    """A C3D state dict under our names, whichever of the two namings it uses."""
    if not jfzhang95_naming(state):
        return state
    renamed = {}
    for key, value in state.items():
        prefix = next((old for old in JFZHANG95_NAMES if key.startswith(old)), None)
        renamed[JFZHANG95_NAMES[prefix] + key[len(prefix):] if prefix else key] = value
    return renamed


def c3d_input_for(pretrained: str | Path | None) -> str:
    """The RGB input `--c3d-input auto` picks for a --pretrained value: "sports1m" for a file in jfzhang95's
    naming (his Sports-1M weights), else "kinetics". A file that cannot be read is left to the loader's error."""
    if pretrained in (None, "none", "kinetics400"):
        return "kinetics"
    try:
        state = torch.load(pretrained, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # the loader names the file and the fix when the model is built
        return "kinetics"
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    return "sports1m" if isinstance(state, dict) and jfzhang95_naming(state) else "kinetics"


class C3D(nn.Module):
    """C3D up to fc7: [N, C, T, H, W] -> [N, 4096]."""

    def __init__(self, in_channels: int = 3, dropout: float = 0.5):
        super().__init__()
        self.conv1 = nn.Conv3d(in_channels, 64, kernel_size=3, padding=1)
        self.pool1 = nn.MaxPool3d(kernel_size=(1, 2, 2), stride=(1, 2, 2))
        self.conv2 = nn.Conv3d(64, 128, kernel_size=3, padding=1)
        self.pool2 = nn.MaxPool3d(kernel_size=2, stride=2)
        self.conv3a = nn.Conv3d(128, 256, kernel_size=3, padding=1)
        self.conv3b = nn.Conv3d(256, 256, kernel_size=3, padding=1)
        self.pool3 = nn.MaxPool3d(kernel_size=2, stride=2)
        self.conv4a = nn.Conv3d(256, 512, kernel_size=3, padding=1)
        self.conv4b = nn.Conv3d(512, 512, kernel_size=3, padding=1)
        self.pool4 = nn.MaxPool3d(kernel_size=2, stride=2)
        self.conv5a = nn.Conv3d(512, 512, kernel_size=3, padding=1)
        self.conv5b = nn.Conv3d(512, 512, kernel_size=3, padding=1)
        self.pool5 = nn.MaxPool3d(kernel_size=2, stride=2, padding=(0, 1, 1))
        self.fit = nn.AdaptiveAvgPool3d((1, 4, 4))
        self.fc6 = nn.Linear(512 * 4 * 4, FEATURES)
        self.fc7 = nn.Linear(FEATURES, FEATURES)
        self.relu = nn.ReLU(inplace=True)
        self.dropout = nn.Dropout(p=dropout)
        for module in self.modules():
            if isinstance(module, (nn.Conv3d, nn.Linear)):
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
                nn.init.zeros_(module.bias)

    def forward(self, x):
        x = self.pool1(self.relu(self.conv1(x)))
        x = self.pool2(self.relu(self.conv2(x)))
        x = self.pool3(self.relu(self.conv3b(self.relu(self.conv3a(x)))))
        x = self.pool4(self.relu(self.conv4b(self.relu(self.conv4a(x)))))
        x = self.pool5(self.relu(self.conv5b(self.relu(self.conv5a(x)))))
        x = self.fit(x).flatten(1)
        x = self.dropout(self.relu(self.fc6(x)))
        return self.dropout(self.relu(self.fc7(x)))

