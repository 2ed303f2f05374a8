"""`tsnpipe pack`: the frames and flow images of every extracted video, packed into one LMDB or HDF5 store."""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

import click

from tsnpipe.manifests.files import WorkdirBusy, WorkdirLock, atomic_write_bytes
from tsnpipe.manifests.table import Manifest, manifest_path
from tsnpipe.options import progress_option, workdir_option
from tsnpipe.planning import Candidates, done_columns, has_column, upstream_json
from tsnpipe.runner import Stage, plan_stage, run_info_path
from tsnpipe.stages.errors import TsnpipeError

STORE_NAMES = {"lmdb": "frames.lmdb", "hdf5": "frames.hdf5"}
UPSTREAM = ("started_at", "params_hash", "frames", "pairs")  # what a packed video keeps of its frames and flow rows


def pack_items(workdir: Path, frames: Manifest | None = None, flow: Manifest | None = None) -> Candidates:
    """Every video whose frames are done, fingerprinted by what its frames row and (when done) its flow row say
    of when and how they were made, `{"flow": {...}, "frames": {...}}` (either manifest given when the caller has
    read it already); as columns, one fingerprint text per video."""
    frames = Manifest(workdir, "frames") if frames is None else frames
    if not len(frames):
        raise TsnpipeError(f"{manifest_path(workdir, 'frames')} has no videos; run `tsnpipe extract-frames` into {workdir} first.")
    flow = Manifest(workdir, "flow") if flow is None else flow
    ids, made = upstream_json(frames, UPSTREAM)
    flowed = dict(zip(*upstream_json(flow, UPSTREAM)))
    fingerprints = [f'{{"flow": {flowed[vid]}, "frames": {text}}}' if vid in flowed else f'{{"frames": {text}}}'
                    for vid, text in zip(ids, made)]
    return Candidates(ids, [f"frames/{vid}" for vid in ids], fingerprints=fingerprints)


def flow_formats(workdir: Path, flow: Manifest | None = None) -> dict[str, str]:
    """video_id -> the flow image format (jpg, png) its flow manifest row records, for the videos whose flow is done."""
    flow = Manifest(workdir, "flow") if flow is None else flow
    if not has_column(flow, "image_format"):
        return {}
    columns = done_columns(flow, ["image_format"])
    return {vid: fmt for vid, fmt in zip(columns["video_id"], columns["image_format"]) if fmt}


def store_size(store: Path) -> str:
    files = [p for p in store.iterdir() if p.is_file()]
    return f"{len(files)} files, {sum(p.stat().st_size for p in files) / 1e6:,.1f} MB"


@contextlib.contextmanager
def store_lock(store: Path, command: str):
    """One writer per store, whatever the workdir: a lock file beside the store (`.<name>.lock`), so two
    workdirs packing into one shared store cannot sweep each other's temp shards or interleave an index."""
    lock = WorkdirLock(store.parent, command)
    lock.path = store.parent / f".{store.name}.lock"
    try:
        lock.__enter__()
    except WorkdirBusy:
        holder = lock.path.read_text().strip() or "another process"
        raise TsnpipeError(f"The store {store} is being written by {holder}; wait for that run to finish (or "
                           "stop it) and try again.") from None
    try:
        yield lock
    finally:
        lock.__exit__(None, None, None)


@click.command("pack")
@workdir_option
@click.option("--format", "fmt", type=click.Choice(["lmdb", "hdf5"]), required=True,
              help="lmdb: one key per image; hdf5: shards of one byte blob per video and kind, plus offsets.")
@click.option("--store", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where the store goes. Default: W/stores/frames.lmdb or W/stores/frames.hdf5.")
@click.option("--shard-mb", type=click.IntRange(min=1), default=1024, show_default=True,
              help="HDF5 only: start a new shard file after about this many MB (each shard is built in memory, "
              "then written).")
@click.option("--flow-layout", type=click.Choice(["pairs", "images"]), default="pairs", show_default=True,
              help="pairs: each flow pair as one losslessly compressed array (x above y), the same pixels decoded "
              "in one call; images: each flow image's bytes as extract-flow wrote them (needed by train --gpu-decode).")
@progress_option
def pack(workdir, fmt, store, shard_mb, flow_layout, progress):
    """Pack the JPEG frames (W/frames) and flow images (W/flow) of every extracted video into one store.

    Frames are stored as their JPEG bytes. Flow (JPEG or PNG as extract-flow wrote them, as the flow manifest
    says) is stored by default as one array per pair, x above y: the same pixels, decoded in one call
    (--flow-layout images keeps each file's bytes instead). A store written before reads as it is. Reruns
    pack only videos that are new or were re-extracted since (W/manifests/pack-<format>.parquet), or stored in
    the other flow layout, and never rewrite the others;
    a killed run leaves a readable store and the rerun finishes it. Video without flow yet: its frames are
    packed now and its flow once `tsnpipe extract-flow` has run.
    """
    from tsnpipe.stages.progress import progress_bar

    from tsnpipe.stages.store.pack import STAGE_VERSION, pack_videos

    workdir = Path(workdir)
    store = store.absolute() if store else workdir / "stores" / STORE_NAMES[fmt]  # a relative --store: from here, not W
    output = store.relative_to(workdir).as_posix() if store.is_relative_to(workdir) else str(store)
    # the images layout keeps the params (and so the manifest rows) of stores written before layouts existed
    layout = {"flow_layout": flow_layout} if flow_layout != "images" else {}
    stage = Stage(name=f"pack-{fmt}", verb="packed", params={"format": fmt, "stage_version": STAGE_VERSION, **layout},
                  output_root="", work=None, inputs={"store": str(store)}, hash_content=False)
    started = time.time()
    command = f"tsnpipe pack --format {fmt} -w {workdir}"
    with WorkdirLock(workdir, command), store_lock(store, command):
        flow = Manifest(workdir, "flow")
        items = pack_items(workdir, Manifest(workdir, "frames"), flow)
        click.echo(f"pack: {len(items):,} extracted videos in {workdir} -> {store} ({fmt})")
        atomic_write_bytes(run_info_path(workdir, stage.name),
                           json.dumps({"params": stage.params, "params_hash": stage.params_hash,
                                       "inputs": stage.inputs}, indent=2).encode())
        manifest = Manifest(workdir, stage.name)
        # a video is up to date only in the store its row names: another store (--store) does not hold it
        todo = {item.video_id: item for item, _ in plan_stage(workdir, stage, items, manifest, output=output).todo}
        counts = {"done": 0, "failed": 0}
        bar = progress_bar(total=len(todo), unit="video", desc=stage.name, enabled=progress and bool(todo))

        def record(fact: dict) -> None:
            item = todo[fact["video_id"]]
            row = {**fact, "output": output if fact["status"] == "done" else None, "params_hash": stage.params_hash,
                   "fingerprint": json.dumps(item.fingerprint, sort_keys=True), "source": item.source}
            manifest.record(row)
            counts[fact["status"]] += 1
            bar.update(1)
            if fact["status"] == "failed":
                bar.write(f"failed: {fact['video_id']}: {fact['error']}")

        pack_videos(workdir, store, fmt, list(todo), shard_bytes=shard_mb << 20, progress=record,
                    flow_formats=flow_formats(workdir, flow), flow_layout=flow_layout)
        bar.close()
        manifest.compact_if_changed()
    line = f"{counts['done']:,} packed, {len(items) - len(todo):,} up to date, {counts['failed']:,} failed"
    if counts["failed"]:
        line += f" (see {manifest_path(workdir, stage.name)})"
    where = f"; {store} holds {store_size(store)}" if store.is_dir() else ""
    click.echo(f"{line} in {time.time() - started:.1f} s{where}")
    if counts["failed"]:
        raise SystemExit(1)
