"""Fine-tuning from a tsnpipe checkpoint: `tsnpipe train --pretrained W/runs/<run>/best.pt`.

The zoo's "HMDB51 from Kinetics-400" recipe (mmaction2's `tsn_r50_1x1x8_50e_hmdb51_kinetics400_rgb`): train
a TSN on Kinetics, then start the HMDB51 run from it. Here the source is any checkpoint `tsnpipe train`
wrote (best.pt or last.pt), TSN or 3D, of any class count:
- every tensor of its model but the classifier (`fc.weight`, `fc.bias`) is loaded, BN statistics included;
- the classifier is new, sized for the new classes, drawn from N(0, `head_std`): mmaction2's 0.01 by default here
  (its HMDB51-from-Kinetics config, with plain SGD: `recipe.make_params`), tsn-pytorch's 0.001 on request;
- only the weights come over: optimizer, scheduler, epoch and metrics start afresh (this is not --resume);
- the checkpoint must have the run's arch, backbone, modality and snippet length; anything else is
  refused in one sentence, since its weights would fit nothing or mean something else.
The run prints what was loaded (`describe`). A file that is not a tsnpipe checkpoint (a plain state dict)
goes on to the backbone loaders in `model.py` and `models/`.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from tsnpipe.stages.errors import TsnpipeError
from tsnpipe.stages.train.recipe import TrainParams, params_from_dict

CHECKPOINT_KEYS = {"model", "params", "class_names", "epoch"}  # what checkpoint.load_checkpoint requires
HEAD = "fc."  # the classifier of TSN and of every 3D model (`ClipNet.fc`)
NAMED_WEIGHTS = ("none", "imagenet", "kinetics400")


def read_source(weights: str | Path | None) -> dict | None:
    """The checkpoint `--pretrained` names when it is one written by `tsnpipe train`, else None (a named
    weight set, a plain state dict, or a file the backbone loaders will report on)."""
    if weights is None or str(weights) in NAMED_WEIGHTS or not Path(weights).is_file():
        return None
    try:  # mmap: a plain state dict is only peeked at here, and read by its own loader
        state = torch.load(weights, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # not a zip-format torch file: not ours either
        return None
    if isinstance(state, dict) and CHECKPOINT_KEYS <= state.keys() and isinstance(state["model"], dict):
        return state
    return None


def model_name(params: TrainParams) -> str:
    """`TSN resnet50 flow (5 pairs)` or `r2plus1d_18 rgb`: what has to match for the weights to fit."""
    if params.arch != "tsn":
        return f"{params.arch} {params.modality}"
    snippet = {"rgb": "", "flow": f" ({params.length} pairs)", "rgbdiff": f" ({params.length} differences)"}
    return f"TSN {params.backbone} {params.modality}{snippet.get(params.modality, '')}"


def check_fits(source: TrainParams, params: TrainParams, path: Path) -> None:
    if model_name(source) != model_name(params):
        raise TsnpipeError(f"{path} holds a {model_name(source)} model and this run trains a {model_name(params)}; "
                           "train with the checkpoint's --arch, --backbone, --modality and --length, or pick a "
                           "checkpoint of this model.")


def load_source(model: nn.Module, state: dict, params: TrainParams, path: str | Path) -> str:
    """Copy every tensor of the checkpoint's model but the classifier into `model`; the line to print."""
    path = Path(path)
    source = params_from_dict(state["params"])
    check_fits(source, params, path)
    own = model.state_dict()
    weights = {key: value for key, value in state["model"].items() if not key.startswith(HEAD)}
    unfit = [key for key in own if not key.startswith(HEAD) and (key not in weights or weights[key].shape != own[key].shape)]
    if unfit:
        raise TsnpipeError(f"{path} does not fit this {model_name(params)} ({len(unfit)} tensors missing or of another "
                           f"shape, e.g. {unfit[0]}); pick a checkpoint of the same model.")
    model.load_state_dict({key: weights[key] for key in own if not key.startswith(HEAD)}, strict=False)
    values = sum(weights[key].numel() for key in own if not key.startswith(HEAD))
    new_head = [key for key in own if key.startswith(HEAD)]
    classes = own[f"{HEAD}weight"].shape[0]
    return (f"pretrained: {len(own) - len(new_head)} tensors ({values:,} values) of the {model_name(source)} in {path} "
            f"(epoch {state['epoch']}, {len(state['class_names'])} classes); classifier "
            f"{', '.join(new_head)} new for {classes} classes")
