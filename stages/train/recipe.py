"""The parameters of a training run and their per-modality defaults (tsn-pytorch's UCF101 recipes).

| default | rgb | rgbdiff | flow | reference |
| --- | --- | --- | --- | --- |
| snippet length L | 1 frame | 5 differences (6 frames, 15 channels) | 5 pairs (10 channels) | TSN paper, tsn-pytorch `models.py` |
| segments K | 3 | 3 (tsn-pytorch used 7) | 3 | TSN paper, tsn-pytorch README |
| lr / steps (x0.1) / epochs | 0.001 / 30, 60 / 80 | 0.001 / 80, 160 / 180 | 0.001 / 190, 300 / 340 | tsn-pytorch README |
| gradient clip (L2) | 20 | 40 | 20 | tsn-pytorch README (`--gd`) |
| dropout | 0.8 | 0.8 | 0.7 | tsn-pytorch README, Caffe TSN prototxts |
| batch (videos) | 128 | 128 | 128 | tsn-pytorch README (`-b 128`); Caffe TSN 32 x 4 GPUs |
| momentum / weight decay | 0.9 / 5e-4 | same | same | tsn-pytorch `opts.py`, Caffe TSN solvers |
| first conv lr x (weight, bias) | 1, 2 | 1, 2 | 5, 10 | tsn-pytorch `get_optim_policies` |
| partial BN | on with pretrained weights | same | same | TSN paper, tsn-pytorch (`--no_partialbn` off) |
| crop size | 224 | 224 | 224 | tsn-pytorch `input_size`, Caffe TSN |
| backbone | ResNet-50, ImageNet | same | same | tsnpipe (torchvision's nearest to BN-Inception, as mmaction2's TSN R50) |

Weight decay applies to conv and linear weights only, never to biases or BN parameters; biases train
at twice the lr (tsn-pytorch; `sgd` "tsn"). A run fine-tuned from a tsnpipe checkpoint takes mmaction2's
recipe instead (its HMDB51-from-Kinetics-400 config, the figure the README quotes): `sgd` "plain" (one group,
decay on everything) and its new classifier drawn from N(0, 0.01) (`head_std`; tsn-pytorch's 0.001 otherwise).
Multi-label runs weight their loss by `loss_weight` (`multi_label`), and `protocol` names how a run trains and
is tested (`scores.protocol`: Something-Something's quoted figures are mmaction2's). With a smaller batch, scale the lr by the same factor. Each default below
names its source in its comment; the speed knobs (amp, channels_last, compile, gpu_decode, workers) are tsnpipe's and
change no result beyond rounding (gpu_decode draws the same recipe's crops from the main process's random stream).

The 3D archs (`--arch c3d|r3d_18|mc3_18|r2plus1d_18`) train on one clip of `clip_len` frames per video
(every `stride`-th frame: 16 frames at 10 fps span 1.6 s) at a 112 crop, with these defaults:

| default | c3d | r3d_18, mc3_18, r2plus1d_18 | reference |
| --- | --- | --- | --- |
| weights | none (from scratch) | Kinetics-400 (torchvision) | C3D paper; torchvision weights API |
| lr / steps (x0.1) / epochs | 0.003 / 30, 45 / 50 | 0.001 / 10, 20 / 25 | C3D paper's base lr; fine-tuning: our choice |
| batch (clips) | 30 | 32 | C3D paper (30) |
| dropout | 0.5 after fc6 and fc7 | 0.5 before the classifier | C3D paper |
| gradient clip (L2) | 40 | 40 | as TSN's rgbdiff |

Partial BN and channels_last are TSN's (2D) options: the 3D models train every BN and use the default
memory layout. Segments are 1 (one clip per video and step).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace

from tsnpipe.stages.errors import TsnpipeError
from tsnpipe.stages.models import ARCHS, C3D_INPUTS, C3D_MIN_CLIP_LEN, CLIP_ARCHS
from tsnpipe.stages.models.c3d import c3d_input_for
from tsnpipe.stages.scores.protocol import PROTOCOLS
from tsnpipe.stages.train.model import BACKBONES, MODALITIES


@dataclass(frozen=True)
class TrainParams:
    """Everything that decides what a run learns; stored in every checkpoint as a plain dict."""

    modality: str = "rgb"
    split_dir: str = ""
    store: str = ""
    backbone: str = "resnet50"  # tsnpipe: torchvision's nearest to BN-Inception (mmaction2's TSN R50 configs)
    pretrained: str = "imagenet"  # TSN paper: ImageNet init ("imagenet", "none", or a backbone state dict path)
    segments: int = 3  # TSN paper; tsn-pytorch README --num_segments 3 (its RGBDiff command: 7)
    length: int = 1  # per modality in modality_defaults (tsn-pytorch models.py new_length)
    size: int = 224  # tsn-pytorch models.py input_size; Caffe TSN crop_size
    epochs: int = 80  # per modality in modality_defaults (tsn-pytorch README)
    lr: float = 0.001  # tsn-pytorch README --lr 0.001
    lr_steps: list[int] = field(default_factory=lambda: [30, 60])  # per modality (tsn-pytorch README)
    batch: int = 128  # tsn-pytorch README -b 128; Caffe TSN 32 x 4 GPUs
    momentum: float = 0.9  # tsn-pytorch opts.py --momentum; Caffe TSN solvers
    weight_decay: float = 5e-4  # tsn-pytorch opts.py --weight-decay; Caffe TSN solvers
    clip: float = 20.0  # per modality in modality_defaults (tsn-pytorch README --gd)
    dropout: float = 0.8  # per modality in modality_defaults (tsn-pytorch README --dropout)
    partial_bn: bool = True  # TSN paper; tsn-pytorch partialBN on unless --no_partialbn
    amp: bool | None = None  # tsnpipe speed knob. None: bf16 autocast where CUDA supports it, else off
    channels_last: bool = True  # tsnpipe speed knob
    compile: bool = False  # tsnpipe speed knob
    gpu_decode: bool = False  # tsnpipe speed knob: JPEGs decoded on the device a batch at a time (train.decode)
    workers: int | None = None  # tsnpipe: the available cores less one (data.default_workers); tsn-pytorch's -j 4
    seed: int = 0  # tsnpipe: runs repeat
    deterministic: bool = False  # tsnpipe: exact reruns at some speed
    flow_pairs: str = "frames"  # tsnpipe: how its flow was paired (extract-flow --pairs); test and predict follow it
    arch: str = "tsn"  # TSN paper; or a 3D model (c3d, r3d_18, mc3_18, r2plus1d_18: the 3D table above)
    clip_len: int = 16  # tsnpipe, 3D archs: pictures per clip, the 16 of the C3D and R(2+1)D papers
    stride: int = 1  # tsnpipe, 3D archs: every stride-th frame (or flow pair) of the video
    flip: str = "on"  # TSN paper (random horizontal flip); the split's params.json may ask off or swap-labels (train.flip)
    flip_pairs: list[list[int]] = field(default_factory=list)  # swap-labels: the split's left/right class pairs (mmaction2 flip_label_map)
    multi_label: bool = False  # mmaction2 mmit/hvu configs: sigmoid + binary cross-entropy (BCELossWithLogits), scored by mAP
    head_std: float = 0.001  # tsn-pytorch's N(0, 0.001) new classifier; from a tsnpipe checkpoint mmaction2's 0.01 (make_params)
    sgd: str = "tsn"  # tsn-pytorch's parameter groups; from a tsnpipe checkpoint mmaction2's "plain" SGD (make_params)
    protocol: str = "tsn"  # how it trains and tests (scores.protocol.PROTOCOLS; train picks the split's: sthv1/2 mmaction2's)
    loss_weight: float = 1.0  # multi-label: mean BCE x this (mmaction2 loss_weight; train picks the split's: MMiT 160, HVU 333)
    c3d_input: str = "kinetics"  # tsnpipe, C3D: the RGB input its weights expect (models.C3D_INPUTS; train.clips)

    def as_dict(self) -> dict:
        return asdict(self)


def modality_defaults(modality: str) -> dict:
    """The recipe values that differ between modalities (see the module's table)."""
    if modality == "rgb":  # tsn-pytorch README, UCF101 RGB command; one frame a snippet (TSN paper)
        return {"length": 1, "lr": 0.001, "lr_steps": [30, 60], "epochs": 80, "clip": 20.0, "dropout": 0.8}
    if modality == "rgbdiff":  # tsn-pytorch README, RGB-diff command; 5 differences a snippet (models.py)
        return {"length": 5, "lr": 0.001, "lr_steps": [80, 160], "epochs": 180, "clip": 40.0, "dropout": 0.8}
    if modality == "flow":  # tsn-pytorch README, Flow command; 5 stacked pairs a snippet (TSN paper, models.py)
        return {"length": 5, "lr": 0.001, "lr_steps": [190, 300], "epochs": 340, "clip": 20.0, "dropout": 0.7}
    raise TsnpipeError(f"Unknown modality {modality!r}; use one of {', '.join(MODALITIES)}.")


def arch_defaults(arch: str, modality: str) -> dict:
    """The recipe values of an arch: TSN's per modality, or the 3D table of the module's docstring."""
    if arch == "tsn":
        return modality_defaults(modality)
    clip = {"segments": 1, "size": 112, "clip": 40.0, "dropout": 0.5}
    if arch == "c3d":
        return {**clip, "pretrained": "none", "lr": 0.003, "lr_steps": [30, 45], "epochs": 50, "batch": 30}
    if arch in CLIP_ARCHS:
        return {**clip, "pretrained": "kinetics400", "lr": 0.001, "lr_steps": [10, 20], "epochs": 25, "batch": 32}
    raise TsnpipeError(f"Unknown --arch {arch!r}; use one of {', '.join(ARCHS)}.")


def make_params(modality: str, **overrides) -> TrainParams:
    """Defaults for the arch and `modality`, then the given overrides (None means "use the default")."""
    arch = overrides.get("arch") or "tsn"
    values = {"modality": modality, **arch_defaults(arch, modality)}
    values.update({key: value for key, value in overrides.items() if value is not None})
    if values.get("c3d_input", "auto") == "auto":  # by the weights' provenance (models.c3d.c3d_input_for)
        values["c3d_input"] = c3d_input_for(values.get("pretrained")) if arch == "c3d" else "kinetics"
    if "head_std" not in values or "sgd" not in values:  # fine-tuning a tsnpipe checkpoint: mmaction2's recipe
        finetune = from_checkpoint(values.get("pretrained"))
        values.setdefault("head_std", 0.01 if finetune else 0.001)
        values.setdefault("sgd", "plain" if finetune else "tsn")
    if arch != "tsn":
        values.update(segments=1, partial_bn=False, channels_last=False)
    elif "partial_bn" not in overrides or overrides["partial_bn"] is None:
        values["partial_bn"] = values.get("pretrained", "imagenet") not in ("none", None)
    params = TrainParams(**values)
    check_params(params)
    return params


def from_checkpoint(pretrained) -> bool:
    """Whether --pretrained names a checkpoint of `tsnpipe train` (fine-tuning, as the HMDB51-from-Kinetics recipe)."""
    from tsnpipe.stages.train.transfer import read_source

    return read_source(pretrained) is not None


def params_from_dict(values: dict) -> TrainParams:
    """TrainParams from a checkpoint's dict, ignoring keys a newer version may have added."""
    known = {f.name for f in fields(TrainParams)}
    return replace(TrainParams(), **{key: value for key, value in values.items() if key in known})


def check_params(params: TrainParams) -> None:
    """Refuse values that cannot work, in one sentence naming the option."""
    if params.arch not in ARCHS:
        raise TsnpipeError(f"Unknown --arch {params.arch!r}; use one of {', '.join(ARCHS)}.")
    if params.sgd not in ("tsn", "plain"):
        raise TsnpipeError(f"Unknown --sgd {params.sgd!r}; use tsn or plain.")
    if params.protocol not in PROTOCOLS:
        raise TsnpipeError(f"Unknown --protocol {params.protocol!r}; use one of {', '.join(PROTOCOLS)}.")
    if params.flip not in ("on", "off", "swap-labels"):
        raise TsnpipeError(f"Unknown --flip {params.flip!r}; use on, off or swap-labels.")
    if params.multi_label and params.flip == "swap-labels":
        raise TsnpipeError("--flip swap-labels swaps one label; a --multi-label run takes --flip on or off.")
    if params.arch != "tsn" and params.protocol != "tsn":
        raise TsnpipeError(f"--protocol {params.protocol} is for TSN; the 3D archs take --protocol tsn.")
    if params.arch != "tsn" and params.multi_label:
        raise TsnpipeError("--multi-label is for TSN (--arch tsn); the 3D archs train one label a video.")
    if params.arch != "tsn" and params.flip != "on":
        raise TsnpipeError(f"--flip {params.flip} is for TSN; the 3D archs always flip: pass --flip on "
                           "(on a Something-Something split that mixes its left/right classes).")
    if params.arch != "tsn":
        check_clip_params(params)
    elif params.pretrained == "kinetics400":
        raise TsnpipeError("--pretrained kinetics400 is for the 3D archs; TSN takes imagenet, none or a PATH.")
    if params.c3d_input not in C3D_INPUTS or (params.arch != "c3d" and params.c3d_input != "kinetics"):
        raise TsnpipeError(f"--c3d-input {params.c3d_input} is not for --arch {params.arch}; C3D takes auto, "
                           f"{', '.join(C3D_INPUTS)}, the other archs leave it out.")
    if params.backbone not in BACKBONES:
        raise TsnpipeError(f"Unknown backbone {params.backbone!r}; use one of {', '.join(BACKBONES)}.")
    problems = [
        (params.segments < 1, "--segments must be at least 1"),
        (params.length < 1, "the snippet length must be at least 1"),
        (params.epochs < 1, "--epochs must be at least 1"),
        (params.batch < 1, "--batch must be at least 1"),
        (params.lr <= 0, "--lr must be positive"),
        (params.loss_weight <= 0, "--loss-weight must be positive"),
        (params.head_std <= 0, "--head-std must be positive"),
        (not 0 <= params.dropout < 1, "--dropout must be in [0, 1)"),
        (params.size < (32 if params.arch == "tsn" else 16), "the crop size must be at least 32 pixels (16 for a 3D arch)"),
    ]
    for bad, sentence in problems:
        if bad:
            raise TsnpipeError(f"Invalid training option: {sentence}.")


def check_clip_params(params: TrainParams) -> None:
    """The options a 3D arch cannot take, in one sentence naming the option."""
    problems = [
        (params.modality not in ("rgb", "flow"), f"--arch {params.arch} takes --modality rgb or flow, not {params.modality}"),
        (params.pretrained == "imagenet", f"--arch {params.arch} takes --pretrained kinetics400, none or a PATH, not imagenet"),
        (params.gpu_decode, f"--gpu-decode is for TSN; --arch {params.arch} reads its clips in the workers"),
        (params.clip_len < 1, "--clip-len must be at least 1"),
        (params.stride < 1, "--stride must be at least 1"),
        (params.arch == "c3d" and params.clip_len < C3D_MIN_CLIP_LEN,
         f"C3D needs --clip-len {C3D_MIN_CLIP_LEN} or more (its four temporal pools halve the clip)"),
    ]
    for bad, sentence in problems:
        if bad:
            raise TsnpipeError(f"Invalid training option: {sentence}.")
