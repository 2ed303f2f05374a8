"""Training a TSN: flat functions, arguments in, results out (torchvision's video_classification reference).

`fit` builds the data, model and optimizer from TrainParams, then per epoch: `train_one_epoch`,
`evaluate` on the split's val.csv when build-splits wrote one, else its test list (centre crop, K
segment centres; a 3D model: the centre clip; metrics.csv's val_list says which), lr step, metrics.csv +
curves.png + TensorBoard, `best.pt` when validation mean class accuracy (multi-label: the data set's mAP)
improves, then `last.pt`
(both atomic; a resume that finds best.pt not holding the best epoch rewrites it or says it is lost). `fit(..., resume=True)` continues from `last.pt` exactly: model, optimizer, scheduler,
scaler, epoch and random generator states are restored. Under torchrun (torch.distributed
initialised by the caller) each rank trains on its share and rank 0 alone logs and writes.
"""

from __future__ import annotations

import contextlib
import functools
import os
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from tsnpipe.stages.errors import TsnpipeError
from tsnpipe.stages.progress import progress_bar
from tsnpipe.stages.scores.average_precision import dataset_map_over, mean_average_precision
from tsnpipe.stages.scores.files import per_class_accuracy
from tsnpipe.stages.train.checkpoint import (
    CheckpointError, data_hashes, load_checkpoint, restore_rng, rng_state, save_checkpoint,
)
from tsnpipe.stages.train.batches import DeviceBatches, as_channels_last, prepare_clips, prepare_ready
from tsnpipe.stages.train.clips import dataset_for
from tsnpipe.stages.train.data import make_loader, read_split, split_source, split_targets, table_dataset
from tsnpipe.stages.train.distributed import wrap_distributed
from tsnpipe.stages.splits.validation import VAL_FILE, validation_table
from tsnpipe.stages.train.flip import FlipRule
from tsnpipe.stages.scores.report import plot_curves
from tsnpipe.stages.train.logs import read_metrics, sweep_run_temps, write_metrics
from tsnpipe.stages.train.model import TSN, first_layer_params
from tsnpipe.stages.train.multi_label import DEFAULT_LOSS_WEIGHT, multi_label_loss, summed_multi_label_loss
from tsnpipe.stages.train.recipe import TrainParams, params_from_dict
from tsnpipe.stages.train.transfer import load_source, read_source

# Params a resumed run may change without breaking the state it resumes (speed and logging knobs).
PROGRESS_EVERY = 20  # training steps between two reads of the running loss (each read waits for the device)
RESUMABLE_CHANGES = ("epochs", "workers", "compile", "amp", "channels_last", "deterministic", "gpu_decode")


def optimizer_groups(model: TSN, params: TrainParams) -> list[dict]:
    """`params.sgd` "tsn": tsn-pytorch's `get_optim_policies`: first conv lr x5/x10 for flow (x1/x2 otherwise),
    biases x2 without weight decay, trainable BN parameters without weight decay, other weights x1 with decay.
    "plain": one group, every trainable parameter at the lr with weight decay (mmaction2's default optimizer)."""
    if params.sgd == "plain":
        trainable = [p for p in model.parameters() if p.requires_grad]
        return [{"params": trainable, "lr": params.lr, "weight_decay": params.weight_decay, "name": "weight"}]
    first_weights, first_biases = first_layer_params(model)
    special = {id(p) for p in first_weights + first_biases}
    weights, biases, norms = [], [], []
    for module in model.modules():
        for name, parameter in module.named_parameters(recurse=False):
            if id(parameter) in special or not parameter.requires_grad:
                continue
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                norms.append(parameter)
            elif name == "bias":
                biases.append(parameter)
            else:
                weights.append(parameter)
    first_mult = (5, 10) if params.modality == "flow" else (1, 2)
    groups = [
        {"params": first_weights, "lr_mult": first_mult[0], "decay": True, "name": "first_conv_weight"},
        {"params": first_biases, "lr_mult": first_mult[1], "decay": False, "name": "first_conv_bias"},
        {"params": weights, "lr_mult": 1, "decay": True, "name": "weight"},
        {"params": biases, "lr_mult": 2, "decay": False, "name": "bias"},
        {"params": norms, "lr_mult": 1, "decay": False, "name": "bn"},
    ]
    return [
        {"params": g["params"], "lr": params.lr * g["lr_mult"], "weight_decay": params.weight_decay if g["decay"] else 0.0, "name": g["name"]}
        for g in groups if g["params"] and all(p.requires_grad for p in g["params"])
    ]


def autocast_dtype(device: torch.device, amp: bool | None) -> torch.dtype | None:
    """bf16 where the device does it well (CUDA with bf16, or CPU when asked), fp16 on older GPUs, else None."""
    if amp is False or (amp is None and device.type != "cuda"):
        return None
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16


def autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def train_one_epoch(
    model: nn.Module, loader, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, device: torch.device,
    clip: float, dtype: torch.dtype | None, channels_last: bool = False, progress: bool = True, epoch: int = 0,
    multi_label: bool = False, loss_weight: float = DEFAULT_LOSS_WEIGHT,
) -> dict:
    """One pass over the training loader; returns mean loss, top-1 and clips (videos) per second.

    Loss and hits add up on the device; the host reads them only every PROGRESS_EVERY steps (for the
    progress bar) and at the end, so it can queue the next step while the device runs this one.
    """
    model.train()
    loss_fn = functools.partial(multi_label_loss, weight=loss_weight) if multi_label else nn.CrossEntropyLoss()
    total_loss = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen = 0
    start = time.perf_counter()
    bar = progress_bar(loader, enabled=progress, desc=f"epoch {epoch}", unit="batch", leave=False)
    for step, (clips, labels) in enumerate(bar):
        clips, labels = to_device(clips, device, channels_last), labels.to(device, non_blocking=True)
        with autocast(device, dtype):
            scores = model(clips)
            loss = loss_fn(scores.float(), labels)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if clip > 0:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], clip)
        scaler.step(optimizer)
        scaler.update()
        total_loss += loss.detach() * len(labels)
        correct += top1_hits(scores.detach(), labels)
        seen += len(labels)
        if progress and step % PROGRESS_EVERY == 0:
            bar.set_postfix(loss=f"{float(total_loss) / seen:.3f}", clips_s=f"{seen / (time.perf_counter() - start):.1f}")
    total_loss, correct = float(total_loss), int(correct)
    seconds = time.perf_counter() - start
    return {"loss": total_loss / max(seen, 1), "top1": correct / max(seen, 1), "clips_per_s": seen / seconds, "seconds": seconds}


def top1_hits(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Videos whose best-scored class is their label (multi-label: one of their labels)."""
    best = scores.argmax(dim=1)
    if labels.dim() == 2:
        return labels.gather(1, best[:, None]).sum().long()
    return (best == labels).sum()


@torch.no_grad()
def evaluate(
    model: nn.Module, loader, device: torch.device, num_classes: int, dtype: torch.dtype | None = None,
    channels_last: bool = False, multi_label: bool = False, map_over: str = "classes",
    loss_weight: float = DEFAULT_LOSS_WEIGHT,
) -> dict:
    """Loss, top-1 and mean class accuracy of the model on a loader of [B, K, C, H, W] clips.

    Multi-label: the training loss (`multi_label.multi_label_loss` with `loss_weight`), top-1 counts a top class that
    is one of the video's labels,
    and "mean_class" holds the mean average precision over `map_over` (classes or videos: the data set's own
    mean, `average_precision.dataset_map_over`; best.pt is picked on it)."""
    model.eval()
    if multi_label:
        loss_fn = functools.partial(summed_multi_label_loss, weight=loss_weight)
    else:
        loss_fn = nn.CrossEntropyLoss(reduction="sum")
    total_loss, all_scores, all_labels = torch.zeros((), device=device), [], []
    for clips, labels in loader:  # results stay on the device until the end: no wait per batch
        clips, labels = to_device(clips, device, channels_last), labels.to(device, non_blocking=True)
        with autocast(device, dtype):
            scores = model(clips).float()
        total_loss += loss_fn(scores, labels)
        all_scores.append(scores)
        all_labels.append(labels)
    total_loss = float(total_loss)
    scores = torch.cat(all_scores).cpu().numpy() if all_scores else np.zeros((0, num_classes), np.float32)
    labels = torch.cat(all_labels).cpu().numpy() if all_labels else np.zeros((0, num_classes) if multi_label else 0, np.int64)
    seen = max(len(labels), 1)
    if multi_label:
        hits = labels[np.arange(len(labels)), scores.argmax(axis=1)] if len(labels) else np.zeros(0)
        return {"loss": total_loss / seen, "top1": float(np.mean(hits)) if len(labels) else float("nan"),
                "mean_class": mean_average_precision(scores, labels, map_over) if len(labels) else float("nan")}
    recall = per_class_accuracy(scores, labels) if len(labels) else np.array([np.nan])
    return {
        "loss": total_loss / seen,
        "top1": float(np.mean(scores.argmax(axis=1) == labels)) if len(labels) else float("nan"),
        "mean_class": float(np.nanmean(recall)),
    }


def to_device(clips: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    """Move a [B, K, C, H, W] batch (no work when `DeviceBatches` made it there already); channels_last
    applies to the [B*K, C, H, W] view the backbone sees."""
    clips = clips.to(device, non_blocking=True)
    return as_channels_last(clips) if channels_last else clips


def device_batches(loader, params: TrainParams, device: torch.device) -> DeviceBatches:
    """The loader's uint8 batches as normalised clips on the device, prepared one batch ahead on CUDA
    (a 3D model's clips come from the workers as float input and are only moved)."""
    if params.arch != "tsn":
        return DeviceBatches(loader, device, prepare_ready)
    shape = dict(modality=params.modality, segments=params.segments, length=params.length,
                 channels_last=params.channels_last)
    if params.gpu_decode:
        from tsnpipe.stages.train.decode import prepare_encoded

        prepare = functools.partial(prepare_encoded, size=params.size, train=loader.dataset.mode == "train",
                                    flip_rule=loader.dataset.flip_rule, **shape)
    else:
        prepare = functools.partial(prepare_clips, **shape)
    return DeviceBatches(loader, device, prepare)


def run_dataset(params: TrainParams, table, mode: str):
    """What training or validation reads: pictures cut in the workers, or JPEG bytes with --gpu-decode."""
    if params.gpu_decode:
        from tsnpipe.stages.train.decode import EncodedSnippets

        return table_dataset(params.store, table, params.modality, params.segments, params.length, params.size, mode,
                             kind=EncodedSnippets)
    return dataset_for(params, table, mode)


def build_model(params: TrainParams, num_classes: int, weights: str | None = None) -> TSN:
    """The TSN (or 3D model) these params describe; `weights` overrides params.pretrained (None when loading a checkpoint)."""
    if params.arch != "tsn":
        from tsnpipe.stages.models.clip_net import ClipNet

        return ClipNet(num_classes, params.arch, params.modality, params.dropout, weights=weights, head_std=params.head_std)
    return TSN(
        num_classes, params.modality, params.backbone, params.length, params.dropout, params.partial_bn,
        weights=weights, head_std=params.head_std,
    )


def fit(params: TrainParams, run_dir: str | Path, resume: bool = False, device: str | None = None, progress: bool = True, log=print) -> dict:
    """Train (or continue) a run in `run_dir`; returns the best validation metrics and the checkpoint paths."""
    run_dir = Path(run_dir)
    device = pick_device(device)
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    if distributed and device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    main_rank = not distributed or torch.distributed.get_rank() == 0
    if main_rank:
        sweep_run_temps(run_dir)  # what a kill -9 left; the run's lock is held
    if params.deterministic:
        torch.use_deterministic_algorithms(True)
    torch.manual_seed(params.seed)

    train_table, test_table, class_names = read_split(params.split_dir)
    val_table = validation_table(params.split_dir, len(class_names), test_table)
    val_list = VAL_FILE if (Path(params.split_dir) / VAL_FILE).is_file() else "test.csv"  # what chooses best.pt
    train_set = run_dataset(params, train_table, "train")
    train_set.flip_rule = FlipRule.for_run(params, len(class_names))
    val_set = run_dataset(params, val_table, "val")
    map_over = dataset_map_over(split_source(params.split_dir))  # multi-label: what picks best.pt (MMiT: over videos)
    if params.multi_label:  # several labels a video: multi-hot targets for the sigmoid + BCE loss
        train_set.labels = split_targets(train_table, len(class_names))
        val_set.labels = split_targets(val_table, len(class_names))
    pin = device.type == "cuda"
    train_loader = make_loader(
        train_set, params.batch, shuffle=True, workers=params.workers, drop_last=len(train_set) > params.batch, pin=pin,
        seed=params.seed,
    )
    val_loader = make_loader(val_set, params.batch, shuffle=False, workers=params.workers, shard=False, pin=pin,
                             seed=params.seed)

    last_path, best_path = run_dir / "last.pt", run_dir / "best.pt"
    checkpoint = load_checkpoint(last_path) if resume else None
    weights = None if checkpoint else params.pretrained
    source = read_source(weights)  # a checkpoint of `tsnpipe train` to fine-tune from (transfer.py)
    model = build_model(params, len(class_names), None if source else weights)
    if source is not None:
        loaded = load_source(model, source, params, weights)
        if main_rank:
            log(loaded)
    model = model.to(device)
    if params.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(optimizer_groups(model, params), lr=params.lr, momentum=params.momentum)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(params.lr_steps), gamma=0.1)
    dtype = autocast_dtype(device, params.amp)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    hashes = data_hashes(Path(params.split_dir), Path(params.store))

    start_epoch, best = 1, {"val_mean_class": -1.0}
    rows = read_metrics(run_dir / "metrics.csv") if checkpoint else []
    if checkpoint:
        check_resumable(checkpoint, params, hashes, last_path)
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        scaler.load_state_dict(checkpoint["scaler"])
        restore_rng(checkpoint["rng"])
        start_epoch = int(checkpoint["epoch"]) + 1
        best = dict(checkpoint.get("best", best))
        if main_rank:
            best = settle_best(checkpoint, best, best_path, log)
        rows = [row for row in rows if row["epoch"] < start_epoch]
        if main_rank:
            log(f"resuming {last_path} after epoch {start_epoch - 1}")

    trained = model
    if distributed:
        trained = wrap_distributed(model, device)
    if params.compile:
        trained = torch.compile(trained)
    writer = None
    if main_rank:
        run_dir.mkdir(parents=True, exist_ok=True)
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(run_dir / "tensorboard"))

    for epoch in range(start_epoch, params.epochs + 1):
        train_loader.sampler.set_epoch(epoch)  # the order and every draw of the epoch: from (seed, epoch, index)
        lr = next(g["lr"] for g in optimizer.param_groups if g["name"] == "weight")
        train = train_one_epoch(
            trained, device_batches(train_loader, params, device), optimizer, scaler, device, params.clip, dtype,
            params.channels_last, progress and main_rank, epoch, params.multi_label, params.loss_weight,
        )
        scheduler.step()
        if not main_rank:
            continue
        val = evaluate(model, device_batches(val_loader, params, device), device, len(class_names), dtype, params.channels_last,
                       params.multi_label, map_over, params.loss_weight)
        row = {
            "epoch": epoch, "lr": lr, "train_loss": train["loss"], "train_top1": train["top1"], "val_loss": val["loss"],
            "val_top1": val["top1"], "val_mean_class": val["mean_class"], "clips_per_s": train["clips_per_s"],
            "seconds": train["seconds"], "val_list": val_list,
        }
        rows.append(row)
        for key, value in row.items():
            if key not in ("epoch", "val_list"):
                writer.add_scalar(key, value, epoch)
        writer.flush()
        write_metrics(run_dir / "metrics.csv", rows)
        plot_curves(run_dir / "metrics.csv", run_dir / "curves.png")
        improved = val["mean_class"] > best["val_mean_class"]
        if improved:
            best = dict(row)
        state = {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(), "epoch": epoch, "params": params.as_dict(), "class_names": class_names,
            "hashes": hashes, "rng": rng_state(), "metrics": row, "best": best,
        }
        if improved:  # best.pt first: last.pt never names an epoch whose best.pt is not on disk
            save_checkpoint(best_path, state)
        save_checkpoint(last_path, state)
        log(
            f"epoch {epoch}/{params.epochs}: train loss {train['loss']:.4f} top-1 {train['top1']:.3f}, "
            f"val top-1 {val['top1']:.3f} {f'mAP over {map_over}' if params.multi_label else 'mean class'} {val['mean_class']:.3f}, "
            f"{train['clips_per_s']:.1f} clips/s"
        )
    if writer is not None:
        writer.close()
    return {"best": best, "last": last_path, "best_checkpoint": best_path if best_path.is_file() else None, "rows": rows}


def saved_epoch(path: Path) -> int | None:
    """The epoch a checkpoint on disk holds, or None when it is missing or unreadable (mapped, not read whole)."""
    try:
        return int(torch.load(path, map_location="cpu", weights_only=True, mmap=True)["epoch"])
    except Exception:  # missing, torn or foreign: all mean "not the best epoch's file"
        return None


def settle_best(checkpoint: dict, best: dict, best_path: Path, log) -> dict:
    """The best row a resumed run goes on from, with best.pt holding its epoch: a missing or other-epoch best.pt
    (a full disk, a deletion) is rewritten from last.pt when that is the best epoch; else the loss is said and
    the best starts over, so best.pt and the closing line name only what is on disk."""
    epoch = best.get("epoch")
    if epoch is None or saved_epoch(best_path) == epoch:
        return best
    if epoch == checkpoint["epoch"]:
        save_checkpoint(best_path, checkpoint)
        log(f"rewrote {best_path} (epoch {epoch}, the best so far) from the checkpoint resumed")
        return best
    log(
        f"warning: {best_path} does not hold epoch {epoch}, the best so far (validation mean class "
        f"{best['val_mean_class']:.4f}), and it cannot be rebuilt; best.pt will hold the best of the epochs from "
        f"{int(checkpoint['epoch']) + 1} on"
    )
    return {"val_mean_class": -1.0}


def check_resumable(checkpoint: dict, params: TrainParams, hashes: dict, path: Path) -> None:
    """Refuse to resume with other params (except speed knobs and epochs) or other data than the checkpoint's."""
    before = params_from_dict(checkpoint["params"]).as_dict()
    now = params.as_dict()
    changed = [key for key in now if key not in RESUMABLE_CHANGES and before.get(key) != now[key]]
    if changed:
        raise CheckpointError(
            f"{path} was trained with other settings ({', '.join(f'{k}={before.get(k)!r}' for k in changed)}); "
            "resume with the same options or start a new --run-name."
        )
    if checkpoint.get("hashes") != hashes:
        raise CheckpointError(
            f"{path} was trained on other split or store files than the ones given now; "
            "resume on the same data or start a new --run-name."
        )


def init_distributed() -> bool:
    """Join the process group torchrun describes (WORLD_SIZE > 1); False when not started by torchrun.

    NCCL with one GPU per process (cuda:LOCAL_RANK) where there are GPUs, gloo on the CPU.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return True


def pick_device(device: str | None) -> torch.device:
    """The requested device, or CUDA when there is one; a missing GPU is a user error, not a traceback."""
    if device and device.startswith("cuda") and not torch.cuda.is_available():
        raise TsnpipeError(f"--device {device} was asked for but torch sees no CUDA GPU here; use --device cpu.")
    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
