"""The networks features come from: trained checkpoints (one stream each) or an ImageNet backbone, and the layers.

A stream is one network with what its test saw: modality, arch, snippet length (or clip length and stride),
crop size. From a checkpoint (`tsnpipe train`) it is rebuilt with `loop.build_model` and the checkpoint's
params; without one, `imagenet_stream` gives torchvision's backbone on RGB frames (`--pretrained imagenet`,
or a state dict path), at 224. Its `hash` (sha256 of the whole checkpoint file) keys the manifest rows, so a
retrained checkpoint redoes every video. Whole, not `checkpoint.file_hash`'s first and last MiB (meant for stores
of hundreds of GB): a fine-tuned checkpoint can differ only in its middle, and hashing 200 MB takes under a second.

Layers: `pool`, the backbone's pooled feature (ResNet-50: the 2,048 after global average pooling; a 3D
model: its pooled clip feature; C3D: fc7); `scores`, the raw class scores of `snippet_scores` (the fp32
head `tsnpipe test` uses, and what mmaction2's extractor writes); `fc6`, `fc7`: C3D's two 4,096-wide
layers after their ReLU (the C3D paper's extractor; dropout is off at inference).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from tsnpipe.stages.errors import TsnpipeError
from tsnpipe.stages.train.checkpoint import load_checkpoint
from tsnpipe.stages.train.recipe import TrainParams, params_from_dict

IMAGENET_SIZE = 224


@dataclass
class Stream:
    """One feature stream: the params its pictures are made by, where it came from, and (once loaded) its model."""

    name: str
    params: TrainParams
    source: str  # the checkpoint path, or "imagenet:<backbone>" / the weights file
    hash: str
    classes: int = 1
    trained: bool = True  # from a checkpoint (False: an ImageNet backbone, no classifier)
    model: nn.Module | None = field(default=None, repr=False)

    def describe(self) -> dict:
        """What the stream's rows and attributes record."""
        p = self.params
        facts = {"name": self.name, "source": self.source, "hash": self.hash, "modality": p.modality, "arch": p.arch,
                 "size": p.size}
        if p.arch == "tsn":
            facts.update(backbone=p.backbone, length=p.length)
        else:
            facts.update(clip_len=p.clip_len, stride=p.stride)
        return facts


def whole_file_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def stream_names(modalities: list[str]) -> list[str]:
    """rgb, flow, ...; a modality given twice gets _2, _3 (in the order of the checkpoints)."""
    names, seen = [], {}
    for modality in modalities:
        seen[modality] = seen.get(modality, 0) + 1
        names.append(modality if seen[modality] == 1 else f"{modality}_{seen[modality]}")
    return names


def checkpoint_streams(paths: list[Path]) -> list[Stream]:
    """The streams of trained checkpoints, their models not loaded yet (the hash and params only)."""
    states = [load_checkpoint(Path(path)) for path in paths]
    params = [params_from_dict(state["params"]) for state in states]
    names = stream_names([p.modality for p in params])
    return [Stream(name, p, str(Path(path).resolve()), whole_file_hash(Path(path)), len(state["class_names"]))
            for name, p, path, state in zip(names, params, paths, states)]


def imagenet_stream(backbone: str, pretrained: str) -> Stream:
    """An RGB stream of a torchvision backbone with ImageNet weights (or a saved state dict)."""
    if pretrained == "imagenet":
        source, digest = f"imagenet:{backbone}", f"torchvision-default:{backbone}"
    else:
        path = Path(pretrained)
        if not path.is_file():
            raise TsnpipeError(f"There is no weights file {path}; give --pretrained imagenet or the path of a state dict "
                               "saved with torch.save(model.state_dict(), path).")
        source, digest = str(path.resolve()), whole_file_hash(path)
    params = TrainParams(modality="rgb", backbone=backbone, pretrained=pretrained, length=1, size=IMAGENET_SIZE,
                         partial_bn=False, channels_last=True)
    return Stream("rgb", params, source, digest, trained=False)


def check_layer(streams: list[Stream], layer: str) -> None:
    """A sentence for a layer a stream cannot give."""
    for stream in streams:
        if layer in ("fc6", "fc7") and stream.params.arch != "c3d":
            raise TsnpipeError(f"--layer {layer} is C3D's; {stream.source} is a {stream.params.arch} model: use "
                               "--layer pool or scores.")
        if layer == "scores" and not stream.trained:
            raise TsnpipeError("--layer scores needs a trained checkpoint (--checkpoint RUN/best.pt); an ImageNet "
                               "backbone gives --layer pool.")


def load_model(stream: Stream, device: torch.device) -> nn.Module:
    """The stream's network in eval mode on `device` (channels_last when its params say so)."""
    from tsnpipe.stages.train.loop import build_model
    from tsnpipe.stages.train.model import TSN

    if stream.trained:
        state = load_checkpoint(Path(stream.source))
        model = build_model(stream.params, len(state["class_names"]), weights=None)
        model.load_state_dict(state["model"])
    else:
        model = TSN(1, "rgb", stream.params.backbone, 1, 0.0, partial_bn=False, weights=stream.params.pretrained)
    model.eval().to(device)
    if stream.params.channels_last and stream.params.arch == "tsn":
        model.to(memory_format=torch.channels_last)
    return model


@torch.no_grad()
def layer_output(model: nn.Module, inputs: torch.Tensor, layer: str) -> torch.Tensor:
    """[N, D] float32 features of single snippets (or clips) at `layer`."""
    if layer == "pool":
        return model.base(inputs).float()
    if layer == "scores":
        return model.snippet_scores(inputs).float()
    if layer == "fc7":
        return model.base(inputs).float()  # C3D's backbone ends after fc7's ReLU (dropout is off in eval)
    caught = []
    handle = model.base.fc6.register_forward_hook(lambda module, args, output: caught.append(output))
    try:
        model.base(inputs)
    finally:
        handle.remove()
    return torch.relu(caught[0]).float()
