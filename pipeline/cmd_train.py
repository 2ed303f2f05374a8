"""`tsnpipe train` (a TSN for one modality) and `tsnpipe test` (score the test videos with a checkpoint).

Both run one job, not per-video work, so they use neither manifests nor the runner: a training run's
record is its checkpoint (params, data hashes, epoch) and metrics.csv. torch is imported inside the
commands so that `tsnpipe --help` stays quick.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from pathlib import Path

import click
from click.core import ParameterSource

from tsnpipe.manifests.files import WorkdirLock
from tsnpipe.options import CheckpointType, progress_option, workdir_option
from tsnpipe.runner import run_info_path
from tsnpipe.stages.models import ARCHS, C3D_INPUTS
from tsnpipe.stages.scores.protocol import (
    CLIP_TEST_CLIPS, CLIP_TEST_CROPS, PROTOCOLS, TEST_AVERAGE, TEST_CROPS, TEST_SEGMENTS, dataset_protocol, test_views,
)

SOURCES = ("ucf101", "hmdb51", "folders", "kinetics400", "kinetics600", "kinetics700", "list", "sthv2", "sthv1",
           "diving48", "mit", "mmit", "hvu")

# CLI option name -> TrainParams field, for the options that set training params.
PARAM_OPTIONS = {
    "arch": "arch", "clip_len": "clip_len", "stride": "stride", "c3d_input": "c3d_input",
    "backbone": "backbone", "pretrained": "pretrained", "segments": "segments", "length": "length", "size": "size",
    "epochs": "epochs", "lr": "lr", "lr_steps": "lr_steps", "batch": "batch", "wd": "weight_decay", "clip": "clip",
    "dropout": "dropout", "partial_bn": "partial_bn", "amp": "amp", "channels_last": "channels_last",
    "compile_model": "compile", "gpu_decode": "gpu_decode", "workers": "workers", "seed": "seed", "deterministic": "deterministic",
    "flip": "flip", "multi_label": "multi_label", "loss_weight": "loss_weight", "protocol": "protocol",
    "head_std": "head_std", "sgd": "sgd",
}


class StepsType(click.ParamType):
    """`30,60`: the epochs after which the lr is multiplied by 0.1."""

    name = "E1,E2,..."

    def convert(self, value, param, ctx):
        if isinstance(value, list):
            return value
        text = str(value).strip()
        if not re.fullmatch(r"\d+(\s*,\s*\d+)*", text):
            self.fail(f"{value!r} is not a list of epochs: give them comma-separated, such as 30,60.", param, ctx)
        return [int(part) for part in text.split(",")]


def find_source(workdir: Path, source: str | None) -> str:
    """The split source to use: the one given, else the only one under W/splits."""
    if source:
        return source
    found = sorted(p.name for p in (workdir / "splits").glob("*") if p.is_dir()) if (workdir / "splits").is_dir() else []
    if len(found) == 1:
        return found[0]
    if not found:
        raise click.ClickException(f"There are no split lists under {workdir / 'splits'}; run `tsnpipe build-splits` first.")
    raise click.ClickException(f"{workdir / 'splits'} holds splits of {', '.join(found)}; choose one with --source.")


def given_on_command_line(ctx: click.Context, name: str) -> bool:
    return ctx.get_parameter_source(name) not in (ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP)


def recorded_flow_pairs(workdir: Path) -> str:
    """How the workdir's flow was paired (extract-flow --pairs), as W/manifests/flow.run.json records it."""
    try:
        return json.loads(run_info_path(workdir, "flow").read_text())["params"].get("pairs", "frames")
    except (OSError, ValueError, KeyError):
        return "frames"


def picked_on_scored_list(state: dict, subset: str, split_dir: Path) -> bool:
    """Whether a checkpoint is its run's best epoch as chosen on the test list that `test` is about to score."""
    best = state.get("best") or {}
    return (subset == "test" and best.get("val_list") == "test.csv" and best.get("epoch") == state.get("epoch")
            and Path(split_dir).resolve() == Path(state["params"]["split_dir"]).resolve())


def describe_params(params, given: set[str]) -> str:
    """Every training param, the ones taken from defaults marked, so a run says what it used."""
    parts = []
    for key, value in params.as_dict().items():
        if key in ("split_dir", "store") or (key == "flow_pairs" and params.modality != "flow") or (
                key == "flip_pairs" and not value) or (key == "c3d_input" and params.arch != "c3d") or (
                key == "loss_weight" and not params.multi_label):
            continue
        text = ",".join(map(str, value)) if isinstance(value, list) else ("auto" if value is None else value)
        parts.append(f"{key}={text}" + ("" if key in given else "*"))
    return " ".join(parts)


RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+=,@-]*")


def check_run_name(name: str | None) -> str | None:
    """A run name is one plain folder name under W/runs: `..`, `a/b` or an absolute path would write elsewhere."""
    if name is not None and (not RUN_NAME.fullmatch(name) or len(name.encode()) > 200):
        raise click.BadParameter(f"{name!r} is not a plain run name: use letters, digits and '_', '.', '-' (up to 200 "
                                 "bytes, first a letter or digit), such as ucf101_split1_rgb; the run goes to "
                                 "W/runs/<run-name>/.", param_hint="--run-name")
    return name


def recorded_modality(run_dir: Path) -> str:
    """The modality `run_dir/last.pt` was trained on (for `--resume` without --modality)."""
    from tsnpipe.stages.train.checkpoint import load_checkpoint

    return load_checkpoint(run_dir / "last.pt")["params"]["modality"]


@contextlib.contextmanager
def run_lock(run_dir: Path):
    """The lock of a run folder, held while it trains (by rank 0 alone under torchrun, whose ranks share it). A run
    refused before it wrote anything leaves no folder behind."""
    if int(os.environ.get("RANK", "0")) != 0:
        yield
        return
    existed = run_dir.exists()
    try:
        with WorkdirLock(run_dir, f"tsnpipe train --run-name {run_dir.name}"):
            yield
    finally:
        if not existed and run_dir.is_dir() and all(path.name.endswith(".lock") for path in run_dir.iterdir()):
            shutil.rmtree(run_dir, ignore_errors=True)


@click.command("train")
@workdir_option
@click.option("--modality", type=click.Choice(["rgb", "rgbdiff", "flow"]), default=None, help="What one snippet is: a frame, frame differences, or a stack of flow pairs (required; with --resume, the checkpoint's).")
@click.option("--split", "split_number", type=click.IntRange(1, 3), default=1, show_default=True, help="Which split of W/splits/<source>/.")
@click.option("--source", type=click.Choice(SOURCES), default=None, help="Split source under W/splits (default: the only one there).")
@click.option("--store", type=click.Path(exists=True, path_type=Path), default=None, help="A packed store (W/stores/frames.lmdb or .hdf5); default: the JPEG folders of W.")
@click.option("--arch", type=click.Choice(ARCHS), default="tsn", show_default=True, help="TSN (2D backbone over K snippets) or a 3D model over one clip: C3D, or torchvision's R3D-18, MC3-18, R(2+1)D-18.")
@click.option("--backbone", type=click.Choice(["resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "vgg16", "mobilenet_v3_large"]), default="resnet50", show_default=True, help="TSN's 2D backbone.")
@click.option("--pretrained", default=None, help="TSN: imagenet (default), none or a backbone state dict PATH; 3D: kinetics400 (default for the ResNets), none (default for c3d) or a PATH. A PATH may be a checkpoint of `tsnpipe train` (W/runs/<run>/best.pt) of the same model and modality: all but its classifier is loaded.")
@click.option("--c3d-input", type=click.Choice(["auto", *C3D_INPUTS]), default="auto", show_default=True, help="C3D's RGB input: kinetics (/255, Kinetics mean and std) or sports1m (0-255 BGR minus its means, for Sports-1M weights); auto: sports1m for a file in jfzhang95's naming.")
@click.option("--clip-len", type=click.IntRange(min=1), default=16, show_default=True, help="3D archs: frames (or flow pairs) per clip; 16 frames at 10 fps span 1.6 s.")
@click.option("--stride", type=click.IntRange(min=1), default=1, show_default=True, help="3D archs: take every k-th frame of the video into a clip.")
@click.option("--segments", type=click.IntRange(min=1), default=3, show_default=True, help="K: segments per video, one snippet each.")
@click.option("--length", type=click.IntRange(min=1), default=None, help="Snippet length: flow pairs (default 5) or frame differences (default 5); RGB uses 1.")
@click.option("--size", type=click.IntRange(min=16), default=None, help="Crop size fed to the network (TSN 224; 3D 112, cut from a 128x171 resize).")
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="Default per modality: rgb 80, rgbdiff 180, flow 340 (3D: c3d 50, ResNets 25).")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=None, help="Base learning rate (default 0.001).")
@click.option("--lr-steps", type=StepsType(), default=None, help="Epochs after which the lr drops x0.1 (rgb 30,60; rgbdiff 80,160; flow 190,300).")
@click.option("--batch", type=click.IntRange(min=1), default=None, help="Videos per step, per GPU under torchrun (TSN 128, C3D 30, 3D ResNets 32).")
@click.option("--wd", type=click.FloatRange(min=0), default=5e-4, show_default=True, help="Weight decay of conv and linear weights.")
@click.option("--clip", type=click.FloatRange(min=0), default=None, help="Gradient L2-norm clip, 0 for none (rgb/flow 20, rgbdiff 40).")
@click.option("--dropout", type=click.FloatRange(0, 1, max_open=True), default=None, help="Dropout before the classifier (rgb/rgbdiff 0.8, flow 0.7).")
@click.option("--partial-bn/--no-partial-bn", default=None, help="Freeze every BN but the first (default: on with pretrained weights).")
@click.option("--flip", type=click.Choice(["on", "off", "swap-labels"]), default=None,
              help="Horizontal flip: on; off; or swap-labels (a flipped clip trains as its left/right mirror class, "
                   "the test's mirrored crops are read the same way). Default: off under an mmaction2 --protocol "
                   "(Something-Something's default), else the split's (others: on).")
@click.option("--head-std", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Std of the new classifier's normal init: tsn-pytorch's 0.001, or (default when --pretrained is a "
                   "tsnpipe checkpoint) mmaction2's 0.01.")
@click.option("--sgd", type=click.Choice(["tsn", "plain"]), default=None,
              help="tsn: tsn-pytorch's parameter groups (biases x2 lr, no decay on biases and BN); plain: one group, "
                   "as mmaction2 (default when --pretrained is a tsnpipe checkpoint).")
@click.option("--protocol", type=click.Choice(PROTOCOLS), default=None,
              help="How the run trains and is tested, recorded in it: tsn (flip as --flip says; test 25 snippets x 10 "
                   "crops) or mmaction2's Something-Something configs (never flip; test the training's snippets x 10 "
                   "crops of 224 (V1) or 3 of 256 (V2)). Default: the split's data set's quoted figure's.")
@click.option("--multi-label/--single-label", "multi_label", default=None,
              help="Several labels a video: sigmoid + binary cross-entropy, validation and test by mAP "
                   "(default: as the split says; build-splits --mmit writes multi-label splits).")
@click.option("--loss-weight", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Multi-label: the loss is the mean binary cross-entropy times this (mmaction2's loss_weight). "
                   "Default: the split's data set's config (MMiT 160, HVU 333), else 1.")
@click.option("--resume", is_flag=True, help="Continue W/runs/<run-name>/last.pt; options not given are taken from it.")
@click.option("--device", default=None, help="cuda, cuda:1 or cpu (default: cuda when there is one).")
@click.option("--amp/--no-amp", default=None, help="bf16 autocast (default: on for CUDA, off on the CPU).")
@click.option("--channels-last/--no-channels-last", default=True, show_default=True)
@click.option("--compile", "compile_model", is_flag=True, help="torch.compile the model.")
@click.option("--gpu-decode", is_flag=True, help="TSN: workers read JPEG bytes and the GPU decodes each batch (nvjpeg); for machines whose cores cannot keep up.")
@click.option("--workers", type=click.IntRange(min=0), default=None, help="DataLoader worker processes (default: the available cores less one).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--deterministic", is_flag=True, help="Deterministic algorithms (slower; exact reruns).")
@click.option("--run-name", default=None, callback=lambda ctx, param, value: check_run_name(value),
              help="Folder under W/runs, a plain name (default: <source>_split<N>_<modality>_<backbone or 3D arch>).")
@progress_option
@click.pass_context
def train(ctx, workdir, modality, split_number, source, store, run_name, resume, device, progress, **options):
    """Train a TSN (or a 3D model, --arch) for one modality on a split and write W/runs/<run-name>/.

    Writes last.pt every epoch (atomically) and best.pt when the validation mean class accuracy improves,
    metrics.csv, curves.png and TensorBoard logs. Options marked * in the printed settings are the
    modality's recipe defaults.
    """
    from tsnpipe.stages.splits.tables import split_dir as split_path
    from tsnpipe.stages.train.checkpoint import load_checkpoint
    from tsnpipe.stages.train.data import split_is_multi_label, split_source
    from tsnpipe.stages.train.flip import resolve_flip
    from tsnpipe.stages.train.loop import fit, init_distributed
    from tsnpipe.stages.train.multi_label import dataset_loss_weight
    from tsnpipe.stages.train.recipe import make_params, params_from_dict

    workdir = Path(workdir)
    if modality is None and not (resume and run_name):
        raise click.UsageError("Missing option '--modality' (rgb, rgbdiff or flow); with --resume and --run-name it "
                               "is taken from the run's checkpoint.")
    if modality is None:
        modality = recorded_modality(workdir / "runs" / run_name)
    source = find_source(workdir, source)
    given = {"modality"} | {PARAM_OPTIONS[name] for name in PARAM_OPTIONS if given_on_command_line(ctx, name)}
    values = {PARAM_OPTIONS[name]: value for name, value in options.items()}
    model_name = values["backbone"] if values["arch"] == "tsn" else values["arch"]
    run_name = run_name or f"{source}_split{split_number}_{modality}_{model_name}"
    run_dir = workdir / "runs" / run_name
    with run_lock(run_dir):  # one training per run name: two would write the same checkpoints
        if resume:
            before = params_from_dict(load_checkpoint(run_dir / "last.pt")["params"]).as_dict()
            values = {key: (values[key] if key in given else before[key]) for key in values}
            values["flow_pairs"] = before["flow_pairs"]
            given |= set(values)
        elif (run_dir / "last.pt").exists():
            raise click.ClickException(f"{run_dir} already holds a checkpoint; pass --resume to continue it or choose another --run-name.")
        if modality == "rgb" or values["arch"] != "tsn":
            values["length"] = 1
        if not resume and modality == "flow":  # the flow the run reads: how W's flow was paired
            values["flow_pairs"] = recorded_flow_pairs(workdir)
            given.add("flow_pairs")
        if resume:
            values["flip_pairs"] = before.get("flip_pairs", [])
        else:  # the split decides the default protocol and flip (Something-Something: mmaction2's, never flipping)
            split = split_path(workdir, source, split_number)
            if values["protocol"] is None:  # the 3D archs have one protocol, TSN's
                values["protocol"] = dataset_protocol(split_source(split)) if values["arch"] == "tsn" else "tsn"
            never_flip = values["protocol"] != "tsn"
            values["flip"], values["flip_pairs"] = resolve_flip(values["flip"] or ("off" if never_flip else None), split)
            given.add("flip_pairs")
            if values["multi_label"] is None:
                values["multi_label"] = split_is_multi_label(split_path(workdir, source, split_number))
            if values["loss_weight"] is None:  # the weight of the mmaction2 config behind the data set's figure
                values["loss_weight"] = dataset_loss_weight(split_source(split_path(workdir, source, split_number)))
        store = store or workdir
        params = make_params(
            modality, split_dir=str(split_path(workdir, source, split_number).resolve()), store=str(Path(store).resolve()), **values,
        )
        click.echo(f"train: {run_dir}; split {source} {split_number}; store {store}")
        click.echo(f"train: {describe_params(params, given)} (* = default)")
        init_distributed()  # under torchrun: one process per GPU, each training on its share of the videos
        result = fit(params, run_dir, resume=resume, device=device, progress=progress, log=click.echo)
    best = result["best"]
    saved = ", ".join(str(path) for path in (result["best_checkpoint"], result["last"]) if path and Path(path).is_file())
    if best.get("epoch") is None:  # best.pt was lost and no epoch trained since has taken its place
        click.echo(f"train: no best epoch on disk (the best was lost with its best.pt, and no epoch trained since "
                   f"improved on it); checkpoints {saved or 'none'}")
        return
    click.echo(
        f"train: best epoch {best.get('epoch')} (chosen on {best.get('val_list', 'the validation list')}): "
        f"validation {'mAP' if params.multi_label else 'mean class'} {best['val_mean_class']:.4f}, "
        f"top-1 {best.get('val_top1', float('nan')):.4f}; checkpoints {saved or 'none'}"
    )


@click.command("test")
@click.option("--checkpoint", type=CheckpointType(), required=True, help="A .pt file written by `tsnpipe train` (best.pt or last.pt).")
@workdir_option
@click.option("--store", type=click.Path(exists=True, path_type=Path), default=None, help="A packed store; default: the JPEG folders of W.")
@click.option("--source", type=click.Choice(SOURCES), default=None, help="Split source (default: the checkpoint's).")
@click.option("--split", "split_number", type=click.IntRange(1, 3), default=None, help="Split number (default: the checkpoint's).")
@click.option("--segments", type=click.IntRange(min=1), default=None, help=f"Snippets (TSN, default {TEST_SEGMENTS}) or clips (3D, default {CLIP_TEST_CLIPS}) per video, evenly spaced.")
@click.option("--crops", type=click.Choice(["1", "3", "10"]), default=None, help=f"Views per snippet: centre; 3 along the long side; 4 corners + centre and their flips (default: TSN {TEST_CROPS}, 3D {CLIP_TEST_CROPS}).")
@click.option("--subset", type=click.Choice(["test", "val"]), default="test", show_default=True, help="Score the test list, or val.csv (from build-splits --val-ratio) for `fuse --search-weights`.")
@click.option("--average", type=click.Choice(["raw", "softmax"]), default=TEST_AVERAGE, show_default=True, help="Average raw scores (the paper) or softmax probabilities.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Score file (default: W/scores/<run-name>.pkl); accuracies go to the same name with .json.")
@click.option("--batch", type=click.IntRange(min=1), default=None, help="Videos per forward pass (default: 1 on the CPU, up to 16 on a GPU as its memory allows).")
@click.option("--workers", type=click.IntRange(min=0), default=None, help="DataLoader worker processes (default: the available cores less one).")
@click.option("--device", default=None, help="cuda, cuda:1 or cpu (default: cuda when there is one).")
@click.option("--precision", type=click.Choice(["fp16", "bf16", "fp32"]), default=None,
              help="Autocast precision of the backbone (default: fp16 on a GPU, fp32 on the CPU); a video whose scores "
              "are not finite is scored again in fp32.")
@click.option("--amp/--no-amp", default=None, help="Older switch: --amp is --precision bf16, --no-amp --precision fp32.")
@progress_option
def run_test(checkpoint, workdir, store, source, split_number, segments, crops, subset, average, out, batch, workers,
             device, precision, amp, progress):
    """Score every test video of the split with a checkpoint and write a score file for `tsnpipe fuse`.

    Each video: SEGMENTS snippets x CROPS views at the stored frame size (a 3D model: SEGMENTS clips x CROPS
    views of the 128x171 resize), class scores averaged over crops then snippets; prints top-1, top-5 and
    mean class accuracy and writes them as JSON beside the score file.
    """
    from tsnpipe.stages.scores.evaluate import score_split
    from tsnpipe.stages.scores.outputs import check_writable
    from tsnpipe.stages.splits.tables import split_dir as split_path
    from tsnpipe.stages.train.checkpoint import load_checkpoint
    from tsnpipe.stages.train.recipe import params_from_dict

    workdir = Path(workdir)
    state = load_checkpoint(checkpoint)
    params = params_from_dict(state["params"])
    trained_on = Path(params.split_dir)
    default_segments, default_crops, crop_size = test_views(params.protocol, params.arch, params.segments, params.size)
    segments, crops = segments or default_segments, crops or default_crops
    source = source or trained_on.parent.name
    number = split_number or int(trained_on.name.removeprefix("split") or 1)
    split_dir = split_path(workdir, source, number)
    suffix = "_val" if subset == "val" else ""
    out = check_writable(out or workdir / "scores" / f"{checkpoint.resolve().parent.name}{suffix}.pkl")
    views = "snippets" if params.arch == "tsn" else f"clips of {params.clip_len}"
    if picked_on_scored_list(state, subset, split_dir):
        click.echo(f"test: note: {checkpoint}'s epoch was picked as best on this same test list (the split had no "
                   "val.csv), so its accuracy is optimistic; build-splits --val-ratio 0.1 and retrain for a fair one")
    click.echo(f"test: {checkpoint} on the {subset} list of {split_dir}; {segments} {views} x {crops} crops of {crop_size} "
               f"(protocol {params.protocol}), {average} scores averaged over crops then {views.split()[0]}")
    if crops == "10" and params.flip != "on" and params.protocol != "mmaction2-sthv1":  # the run's flip rule decides
        click.echo(f"test: flip {params.flip}: " + ("mirrored crops dropped (5 crops averaged)" if params.flip == "off"
                                                    else "mirrored crops read with the left/right classes swapped"))
    result = score_split(
        checkpoint, out, store=store or workdir, split_dir=split_dir, segments=segments, crops=int(crops), average=average,
        device=device, batch=batch, workers=workers, amp=amp, progress=progress, subset=subset, precision=precision,
        crop_size=crop_size,
    )
    if "map" in result:  # a multi-label run
        click.echo(f"test: {result['videos']} videos: mAP {result['map']:.4f} (over {result['map_over']}), top-1 in labels {result['top1']:.4f} "
                   f"({result['videos_per_s']:.2f} videos/s); per-class AP in the accuracies file")
    else:
        click.echo(
            f"test: {result['videos']} videos: top-1 {result['top1']:.4f}, top-5 {result['top5']:.4f}, "
            f"mean class {result['mean_class']:.4f} ({result['videos_per_s']:.2f} videos/s)"
        )
    rescored = f"; {result['fp32_rescored']} videos scored again in fp32 (not finite)" if result["fp32_rescored"] else ""
    click.echo(f"test: precision {result['precision']}{rescored}; scores {result['scores']}, "
               f"accuracies {result['report']}")
