"""`tsnpipe extract-features` (snippet features of every extracted video) and `tsnpipe export-features` (BMN's CSVs).

Features are a per-video stage like frames and flow: one manifest row per video (`W/manifests/features-NAME`),
keyed on the checkpoints' content hashes and every setting, written as each video finishes; the work is
`stages/features/`. torch is imported inside the commands so that `tsnpipe --help` stays quick.
"""

from __future__ import annotations

import functools
import json
import re
import shutil
import time
from itertools import repeat
from pathlib import Path

import click

from tsnpipe.manifests.files import WorkdirLock
from tsnpipe.manifests.shards import shard_journals
from tsnpipe.manifests.table import Manifest, manifest_path
from tsnpipe.options import CheckpointType, progress_option, shard_items, shard_option, stage_lock, workdir_option
from tsnpipe.planning import Candidates, done_columns, has_column, upstream_json
from tsnpipe.runner import Stage, run_info_path, run_stage
from tsnpipe.stages.errors import TsnpipeError
from tsnpipe.stages.features import LAYERS

STAGE_VERSION = 2  # 2: 3D checkpoints fed their own input (clips.clip_input); 10 crops follow the flip rule
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def stage_name(name: str) -> str:
    return f"features-{name}"


def check_name(name: str) -> str:
    if not NAME_PATTERN.fullmatch(name):
        raise click.BadParameter(f"{name!r} cannot name a feature set: use letters, digits, '_', '.' and '-', such as "
                                 "anet_tsn_r50.", param_hint="--name")
    return name


def recorded_fps(workdir: Path) -> float:
    """The rate frames were extracted at, as W/manifests/frames.run.json records it."""
    path = run_info_path(workdir, "frames")
    try:
        return float(json.loads(path.read_text())["params"]["fps"])
    except (OSError, ValueError, KeyError, TypeError):
        raise TsnpipeError(f"The frame rate of W/frames is not recorded in {path}; run `tsnpipe extract-frames` into "
                           f"{workdir} first.") from None


def feature_items(workdir: Path, flow_stream: bool) -> tuple[Candidates, dict]:
    """Every video whose frames are done, fingerprinted by its frames (and flow) rows; and its VideoFacts."""
    from tsnpipe.stages.features.extract import VideoFacts

    frames = Manifest(workdir, "frames")
    if not len(frames):
        raise TsnpipeError(f"{manifest_path(workdir, 'frames')} has no videos; run `tsnpipe extract-frames VIDEO_DIR "
                           f"-w {workdir}` first.")
    fps = recorded_fps(workdir)
    items = feature_fingerprints(frames, Manifest(workdir, "flow") if flow_stream else None, flow_stream)
    facts = done_columns(frames, [name for name in ("frames", "src_fps") if has_column(frames, name)])
    facts = {vid: VideoFacts(int(count or 0), fps, src_fps if src_fps == src_fps else None)  # NaN: unknown
             for vid, count, src_fps in
             zip(facts["video_id"], facts.get("frames", repeat(0)), facts.get("src_fps", repeat(None)))}
    return items, facts


def drop_damaged(workdir: Path, manifest: Manifest) -> list[str]:
    """Remove the output folders of done rows whose files no longer hold the bytes written (truncated, emptied,
    deleted in part), so the runner redoes them as outputs missing; returns those folders. One listing of each
    video's folder (a few stats). Rows of older versions, which recorded no size, are trusted."""
    from tsnpipe.stages.features.writers import written_bytes

    if not has_column(manifest, "bytes"):
        return []
    table = manifest.columns(["video_id", "status", "output", "bytes"])
    damaged = []
    for status, output, size in zip(*(table[name].to_pylist() for name in ("status", "output", "bytes"))):
        if status == "done" and output and size is not None:
            found = written_bytes(workdir / output)
            if found is not None and found != int(size):
                shutil.rmtree(workdir / output, ignore_errors=True)
                damaged.append(output)
    return damaged


def flow_stream_of(params: dict) -> bool:
    """Whether a feature set's recorded params (its run.json) read flow."""
    return any(isinstance(stream, dict) and stream.get("modality") == "flow" for stream in params.get("streams") or [])


def feature_fingerprints(frames: Manifest, flow: Manifest | None, flow_stream: bool) -> Candidates:
    """The items of a feature set from the frames (and flow) manifests: `{"frames": {...}}` of what the frames row
    says of when and how they were made, with `"flow"` (null until its flow is done) when a stream reads flow.
    What `status` judges, as a run would; as columns, one fingerprint text per video."""
    from tsnpipe.cmd_pack import UPSTREAM

    ids, made = upstream_json(frames, UPSTREAM)
    if flow_stream:
        flowed = dict(zip(*upstream_json(flow, UPSTREAM)))
        fingerprints = [f'{{"flow": {flowed.get(vid, "null")}, "frames": {text}}}' for vid, text in zip(ids, made)]
    else:
        fingerprints = [f'{{"frames": {text}}}' for text in made]
    return Candidates(ids, list(ids), fingerprints=fingerprints)


def feature_batch_work(jobs, facts, streams, spacing, layer, crops, fmt, store, device, precision, batch, workers):
    """Every video of the run through one process: models loaded once, snippets of many videos a batch."""
    import torch

    from tsnpipe.stages.features.extract import extract_videos
    from tsnpipe.stages.scores.evaluate import precision_dtype

    device = torch.device(device)
    yield from extract_videos(jobs, facts, streams, spacing, layer, crops, fmt, store, device,
                              precision_dtype(device, precision), batch, workers)


def feature_work(source: str, out_dir: Path, **options) -> dict:
    """One video alone (the runner's per-item path)."""
    for _, outcome in feature_batch_work([(source, out_dir)], **options):
        if isinstance(outcome, Exception):
            raise outcome
        return outcome
    raise TsnpipeError(f"Video {source!r} gave no features.")


@click.command("extract-features")
@workdir_option
@click.option("--name", required=True, callback=lambda ctx, param, value: check_name(value),
              help="The feature set: W/features/NAME.h5 (or NAME/ of .npy files) and W/manifests/features-NAME.")
@click.option("--checkpoint", "checkpoints", type=CheckpointType(), multiple=True,
              help="A checkpoint of `tsnpipe train` (RUN/best.pt), one per stream; give it again for another stream "
              "(rgb, then flow). Without it: --backbone's ImageNet features of RGB frames.")
@click.option("--backbone", type=click.Choice(["resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "vgg16",
                                               "mobilenet_v3_large"]), default="resnet50", show_default=True,
              help="Without --checkpoint: the torchvision backbone.")
@click.option("--pretrained", default="imagenet", show_default=True,
              help="Without --checkpoint: imagenet (torchvision's weights) or the PATH of a backbone state dict.")
@click.option("--layer", type=click.Choice(LAYERS), default="pool", show_default=True,
              help="pool: the backbone's pooled feature (ResNet-50: 2,048); scores: raw class scores (mmaction2's "
              "extractor); fc6, fc7: C3D's (the C3D paper's extractor).")
@click.option("--interval", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Seconds between snippets. Default: 16 frames at the video's own rate (mmaction2's; 0.64 s at 25 fps).")
@click.option("--every", type=click.IntRange(min=1), default=None,
              help="Extracted frames between snippets (at 10 fps, --every 5 is 0.5 s).")
@click.option("--crops", type=click.Choice(["1", "3", "10"]), default="1", show_default=True,
              help="Views per snippet at the checkpoint's test size, features averaged: centre; 3 along the long side; "
              "4 corners + centre and their flips.")
@click.option("--store", type=click.Path(exists=True, path_type=Path), default=None,
              help="A packed store (W/stores/frames.lmdb or .hdf5); default: the JPEG folders of W.")
@click.option("--format", "fmt", type=click.Choice(["hdf5", "npy"]), default="hdf5", show_default=True,
              help="hdf5: a features.h5 per video, linked from W/features/NAME.h5; npy: rgb.npy, flow.npy, times.npy.")
@click.option("--batch", type=click.IntRange(min=1), default=None,
              help="Snippets per forward pass, from as many videos as it takes (default: 32 on the CPU, 512 on a GPU).")
@click.option("--workers", type=click.IntRange(min=0), default=None,
              help="DataLoader worker processes reading pictures (default: the available cores less one).")
@click.option("--device", default=None, help="cuda, cuda:1 or cpu (default: cuda when there is one).")
@click.option("--precision", type=click.Choice(["fp16", "bf16", "fp32"]), default=None,
              help="Autocast precision of the backbone (default: fp16 on a GPU, fp32 on the CPU); a snippet "
              "whose features are not finite is computed again in fp32.")
@click.option("--amp/--no-amp", default=None, help="Older switch: --amp is --precision bf16, --no-amp --precision fp32.")
@progress_option
@shard_option
def extract_features(workdir, name, checkpoints, backbone, pretrained, layer, interval, every, crops, store, fmt, batch,
                     workers, device, precision, amp, progress, shard):
    """Snippet features of every extracted video (untrimmed: all of W/frames, not a split) into W/features/.

    One snippet every --interval seconds (or --every N frames), built as the checkpoint's test saw it: an RGB
    frame, 5 flow pairs, RGBDiff's frame differences, or a 3D model's clip, centred on the snippet's time;
    centre crop at the test size (or --crops N, averaged). Each video gets a T x D float32 array per stream
    and each snippet's time in seconds. Reruns do only new videos and changed settings or checkpoints; a
    video a checkpoint's modality has no pictures for is a failed row naming the stage to run.
    """
    from tsnpipe.stages.features.extract import Spacing
    from tsnpipe.stages.features.models import check_layer, checkpoint_streams, imagenet_stream
    from tsnpipe.stages.scores.evaluate import precision_dtype, precision_name
    from tsnpipe.stages.train.data import default_workers
    from tsnpipe.stages.train.loop import pick_device

    workdir = Path(workdir)
    if interval is not None and every is not None:
        raise click.UsageError("Give --interval SECONDS or --every N, not both.")
    if checkpoints and pretrained != "imagenet":
        raise click.UsageError("--pretrained picks the backbone's weights when there is no --checkpoint; drop one of them.")
    streams = checkpoint_streams(list(checkpoints)) if checkpoints else [imagenet_stream(backbone, pretrained)]
    check_layer(streams, layer)
    spacing = Spacing(interval=interval, every=every)
    torch_device = pick_device(device)
    if precision is None and amp is not None:
        precision = "bf16" if amp else "fp32"
    precision = precision_name(precision_dtype(torch_device, precision))
    workers = default_workers() if workers is None else workers
    # the checkpoints by content, not by path: a moved or copied checkpoint redoes nothing
    described = [{k: v for k, v in stream.describe().items() if k != "source"} for stream in streams]
    params = {"stage_version": STAGE_VERSION, "streams": described, "layer": layer,
              "interval": interval, "every": every, "crops": int(crops), "format": fmt, "precision": precision,
              "store": str(Path(store).resolve()) if store else None}
    click.echo(f"extract-features: {name}: " + "; ".join(f"{s.name} from {s.source} ({s.params.arch}, {s.params.modality}, "
                                                         f"{s.params.size}px)" for s in streams)
               + f"; layer {layer}; {spacing.describe()}; {crops} crop(s); {fmt}; {torch_device}, {precision}")
    options = {"streams": streams, "spacing": spacing, "layer": layer, "crops": int(crops), "fmt": fmt,
               "store": str(store or workdir), "device": str(torch_device), "precision": precision, "batch": batch,
               "workers": workers}
    with stage_lock(workdir, stage_name(name), shard, "tsnpipe extract-features"):
        items, facts = feature_items(workdir, any(s.params.modality == "flow" for s in streams))
        items = shard_items(items, shard)
        folding = not shard and bool(shard_journals(workdir, stage_name(name)))  # shards' videos join the index
        if damaged := drop_damaged(workdir, Manifest(workdir, stage_name(name))):
            click.echo(f"warning: {len(damaged):,} video{'s' * (len(damaged) != 1)}' features were damaged (not the "
                       f"size written), such as {workdir / damaged[0]}; they are redone", err=True)
        stage = Stage(name=stage_name(name), verb="extracted", params=params, output_root=f"features/{name}",
                      work=functools.partial(feature_work, facts=facts, **options), hash_content=False,
                      inputs={"frames_manifest": str(manifest_path(workdir, "frames")), "store": str(store or workdir)},
                      batch_work=functools.partial(feature_batch_work, facts=facts, **options))
        summary = run_stage(workdir, stage, items, jobs=1, progress=progress, shard=shard)
        if not shard:  # one index for all shards: written by the next unsharded run, which folds their rows in
            update_links(workdir, name, stage.name, fmt, summary.done or summary.failed or folding)
    click.echo(summary.line())
    if summary.failed:
        raise SystemExit(1)


def update_links(workdir: Path, name: str, stage: str, fmt: str, changed: bool) -> None:
    """W/features/NAME.h5, the index linking every video's features.h5 (removed for npy)."""
    from tsnpipe.stages.features.writers import sweep_link_temps, write_links

    links = workdir / "features" / f"{name}.h5"
    sweep_link_temps(links)
    if fmt == "npy":
        links.unlink(missing_ok=True)  # an index of an earlier hdf5 run would point at files no longer there
    elif changed or not links.exists():
        done = sorted(vid for vid, row in Manifest(workdir, stage).rows.items()
                      if row.get("status") == "done" and row.get("output"))
        write_links(links, name, done)


@click.command("export-features")
@click.argument("name")
@workdir_option
@click.option("--bmn", "steps", type=click.IntRange(min=1), required=True,
              help="Resample every video to this many steps (BMN and BSN on ActivityNet: 100) by mmaction2's rule.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder of CSVs (default: W/features/NAME_bmnSTEPS/), one <video_id>.csv per video.")
@progress_option
def export_features(name, workdir, steps, out, progress):
    """Write one CSV per video of feature set NAME, resampled to --bmn steps, streams side by side (RGB then flow; f0 ...).

    The resampling is mmaction2's activitynet_feature_postprocessing.py (`pool_feature`: linear interpolation,
    3 samples per step, averaged); the CSVs are the files BMN's data loader reads. OUT/.tsnpipe-export.jsonl
    records what made each CSV (steps, streams, the features it came from, its size): a rerun writes only the
    CSVs whose features changed, that another --bmn made, or that were damaged.
    """
    from tsnpipe.stages.features.bmn import column_order, write_csv
    from tsnpipe.stages.features.exports import ExportRecord
    from tsnpipe.stages.features.writers import read_video, written_bytes
    from tsnpipe.stages.progress import progress_bar

    workdir = Path(workdir)
    check_name(name)
    info = run_info_path(workdir, stage_name(name))
    rows = Manifest(workdir, stage_name(name)).rows
    if not rows or not info.is_file():
        raise TsnpipeError(f"{workdir} has no feature set {name!r} ({manifest_path(workdir, stage_name(name))} is empty); "
                           f"run `tsnpipe extract-features -w {workdir} --name {name}` first.")
    names = column_order(json.loads(info.read_text())["params"]["streams"])  # RGB then flow, as BMN's CSVs
    out = out or workdir / "features" / f"{name}_bmn{steps}"
    done = sorted(vid for vid, row in rows.items() if row.get("status") == "done" and row.get("output"))
    started, written, kept, damaged = time.time(), 0, 0, []
    with WorkdirLock(workdir, "tsnpipe export-features"):
        record = ExportRecord(out)
        try:
            for video_id in progress_bar(done, enabled=progress, desc="export", unit="video"):
                row = rows[video_id]
                folder, target = workdir / row["output"], out / f"{video_id}.csv"
                made = {"steps": steps, "streams": names,
                        "features": [row.get("started_at"), row.get("params_hash"), row.get("bytes")]}
                if record.up_to_date(video_id, made, target):
                    kept += 1
                    continue
                try:
                    if row.get("bytes") is not None and written_bytes(folder) != int(row["bytes"]):
                        raise ValueError("not the size written")
                    features, _ = read_video(folder, names)
                except (OSError, ValueError, KeyError, EOFError) as error:  # truncated, garbled, a stream missing
                    damaged.append(f"{video_id} ({' '.join(str(error).split())[:120] or type(error).__name__})")
                    continue
                write_csv(target, [features[stream] for stream in names], steps)
                record.add(video_id, made, target)
                written += 1
        finally:
            record.close()
    click.echo(f"export-features: {written:,} CSVs written, {kept:,} up to date ({len(done):,} videos, "
               f"{steps} steps x {'+'.join(names)}) in {time.time() - started:.1f} s -> {out}")
    if damaged:
        raise TsnpipeError(f"The features of {len(damaged):,} video{'s' * (len(damaged) != 1)} of {name!r} are "
                           f"damaged, such as {damaged[0]}; run `tsnpipe extract-features -w {workdir} --name {name}` "
                           "with its options again to redo them, then export again.")
