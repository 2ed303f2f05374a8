"""torchvision's video ResNets (Tran et al., "A Closer Look at Spatiotemporal Convolutions", CVPR 2018).

| arch | torchvision builder | blocks | Kinetics-400 clip weights |
| --- | --- | --- | --- |
| r3d_18 | `r3d_18` | 3x3x3 convolutions throughout | `R3D_18_Weights.KINETICS400_V1` |
| mc3_18 | `mc3_18` | 3D in the stem and layer1, 2D (1x3x3) above: mixed convolutions | `MC3_18_Weights.KINETICS400_V1` |
| r2plus1d_18 | `r2plus1d_18` | every 3x3x3 factored into 1x3x3 spatial then 3x1x1 temporal | `R2Plus1D_18_Weights.KINETICS400_V1` |

Weights: "kinetics400" goes through torchvision's weights API (`weights="KINETICS400_V1"`), which
downloads to, or reads from, the torch hub cache (`$TORCH_HOME/hub/checkpoints/`); a path loads a
state dict saved from the same torchvision model (its 400-class `fc` may be present: it is dropped);
"none" starts from random init. The classifier is replaced by the `ClipNet` head.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Callable

import torch
import torchvision
from torch import nn

from tsnpipe.stages.train.model import ModelError

KINETICS = "KINETICS400_V1"


def build_video_resnet(arch: str, weights: str | Path | None) -> tuple[nn.Module, int]:
    """The torchvision model with its classifier replaced by Identity, and its feature width (512)."""
    builder = getattr(torchvision.models.video, arch)
    try:
        model = builder(weights=KINETICS if weights == "kinetics400" else None)
    except (OSError, RuntimeError) as error:  # no network, a proxy, a damaged download cache
        raise ModelError(
            f"Cannot get torchvision's Kinetics-400 weights for {arch} ({error}); check the network or the torch hub "
            "cache ($TORCH_HOME/hub/checkpoints), or pass --pretrained PATH to a saved state dict or --pretrained none."
        ) from error
    if weights not in (None, "none", "kinetics400"):
        load_state_file(model, Path(weights), head="fc.")
    feature_dim = model.fc.in_features
    model.fc = nn.Identity()
    return model, feature_dim


def load_state_file(model: nn.Module, path: Path, head: str, rename: Callable[[dict], dict] | None = None) -> None:
    """Load a state dict saved from the same model; tensors under `head` (the old classifier) are skipped.
    `rename` maps another naming of the same layers to the model's (C3D's two namings)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)  # never runs code a file carries
    except pickle.UnpicklingError:  # torch's message advises weights_only=False, i.e. running the file's code
        raise ModelError(f"{path} holds Python objects beyond tensors, which tsnpipe does not load because unpickling "
                         "them could run code; save only the weights with torch.save(model.state_dict(), path)."
                         ) from None
    except Exception as error:  # unreadable, not a torch file, or carrying code: the file is unusable either way
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ModelError(f"Cannot load weights from {path} ({reason}); give a state dict file saved with "
                         "torch.save(model.state_dict(), path).") from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict):
        raise ModelError(f"{path} does not hold a state dict; save one with torch.save(model.state_dict(), path).")
    state = rename(state) if rename else state
    own = model.state_dict()
    usable = {key: value for key, value in state.items() if key in own and own[key].shape == value.shape}
    missing = [key for key in own if key not in usable and not key.startswith(head)]
    if missing:
        raise ModelError(
            f"{path} does not fit this model ({len(missing)} tensors missing or of another shape, e.g. {missing[0]}); "
            "save the state dict of the same architecture."
        )
    model.load_state_dict(usable, strict=False)
