"""`tsnpipe status --repair`: set a damaged manifest aside and rebuild a stage's rows from its outputs on disk.

An output folder is only ever renamed into place whole, but each one is still checked complete (images
numbered 1..N without gaps; as many flow_y as flow_x) before it counts. A rebuilt row is judged by the
same rule as any other: its input is fingerprinted now (size, mtime and content hash) and its params are
those of the stage's last run (`<stage>.run.json`), so the next run redoes only what really needs it. A
packed video gets its row back only when the store holds the very bytes of its folders (same checksum).
Rows whose outputs are gone or incomplete are not invented: those videos are redone by the next run.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

from tsnpipe.manifests.decide import content_hash, params_hash, stat_fingerprint
from tsnpipe.manifests.files import TEMP_MARK, ManifestError
from tsnpipe.manifests.table import MANIFEST_DIR, Manifest, damaged_name, manifest_path
from tsnpipe.runner import run_info_path

IMAGE = re.compile(r"(img|flow_x|flow_y)_(\d{5})\.(?:jpg|png)")  # frames are jpg; flow jpg or png


def _numbered(folder: Path) -> dict[str, int] | None:
    """Images per prefix when each prefix is numbered 1..N without gaps, else None."""
    numbers: dict[str, list[int]] = {}
    for name in os.listdir(folder):
        if match := IMAGE.fullmatch(name):
            numbers.setdefault(match.group(1), []).append(int(match.group(2)))
    for found in numbers.values():
        if sorted(found) != list(range(1, len(found) + 1)):
            return None
    return {prefix: len(found) for prefix, found in numbers.items()}


def output_folders(root: Path, prefix: str) -> dict[str, dict[str, int]]:
    """video id -> image counts of every complete output folder below `root` holding `prefix` images."""
    found = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if TEMP_MARK not in d)
        if any(name.startswith(prefix) for name in files):
            counts = _numbered(Path(folder))
            if counts and counts.get(prefix):
                found[Path(folder).relative_to(root).as_posix()] = counts
    return found


def _stamp(path: Path) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(path.stat().st_mtime))


def frames_rows(workdir: Path, info: dict) -> list[dict]:
    from tsnpipe.cmd_frames import video_items
    from tsnpipe.stages.frames import jpeg_size, source_facts

    video_dir = Path(info.get("inputs", {}).get("video_dir") or "")
    items = video_items(video_dir) if video_dir.is_dir() else []
    sources = {item.video_id: item.source for item in items if "unreadable" not in item.fingerprint}
    recorded = downstream(workdir, "frames")
    rows = []
    for vid, counts in output_folders(workdir / "frames", "img").items():
        if vid not in sources or "flow_x" in counts:
            continue
        folder = workdir / "frames" / vid
        width, height = jpeg_size((folder / "img_00001.jpg").read_bytes())
        fingerprint = {**stat_fingerprint(Path(sources[vid])), "hash": content_hash(Path(sources[vid]))}
        row = {"video_id": vid, "source": sources[vid], "params_hash": params_hash(info["params"]),
               "started_at": _stamp(folder), "status": "done", "error": None, "output": f"frames/{vid}",
               "frames": counts["img"], "width": width, "height": height,
               "fingerprint": json.dumps(fingerprint, sort_keys=True), "seconds": 0.0,
               **source_facts(Path(sources[vid]))}  # src_fps: features place their snippets by it
        rows.append(recorded_time(row, recorded.get(vid, [])))
    return rows


def downstream(workdir: Path, upstream: str) -> dict[str, list[dict]]:
    """video id -> what the stages downstream of `upstream` (flow of frames; the stores and feature sets of
    both) recorded of its row in their fingerprints, where their manifests are readable."""
    folder = Path(workdir) / MANIFEST_DIR
    names = {p.name.split(".")[0] for p in folder.glob("*.parquet")} | {
        p.name.split(".")[0] for p in folder.glob("*.journal.jsonl")}
    readers = sorted(name for name in names
                     if name.startswith(("pack-", "features-")) or (upstream == "frames" and name == "flow"))
    found: dict[str, list[dict]] = {}
    for name in readers:
        try:
            rows = Manifest(workdir, name).rows
        except ManifestError:
            continue
        for vid, row in rows.items():
            try:
                record = json.loads(row.get("fingerprint") or "{}").get(upstream)
            except (ValueError, AttributeError):
                continue
            if isinstance(record, dict) and record.get("started_at"):
                found.setdefault(vid, []).append(record)
    return found


def recorded_time(row: dict, records: list[dict]) -> dict:
    """The rebuilt row with the time a stage downstream recorded for it, when everything else that stage
    recorded of it (counts, params, input fingerprint) matches: intact outputs downstream then stay up to date."""
    for record in records:
        compared = [key for key in ("frames", "pairs", "params_hash", "fingerprint") if key in record]
        if "params_hash" in compared and all(record[key] == row.get(key) for key in compared):
            return {**row, "started_at": record["started_at"]}
    return row


def flow_rows(workdir: Path, info: dict) -> list[dict]:
    from tsnpipe.cmd_flow import flow_items
    from tsnpipe.stages.store.reader import flow_format

    items = {item.video_id: item for item in flow_items(workdir)}
    recorded = downstream(workdir, "flow")
    rows = []
    for vid, counts in output_folders(workdir / "flow", "flow_x").items():
        if vid not in items or counts.get("flow_x") != counts.get("flow_y"):
            continue
        row = {"video_id": vid, "source": items[vid].source, "params_hash": params_hash(info["params"]),
               "started_at": _stamp(workdir / "flow" / vid), "status": "done", "error": None,
               "output": f"flow/{vid}", "pairs": counts["flow_x"],
               "image_format": flow_format(workdir / "flow" / vid), "pairs_of": info["params"].get("pairs", "frames"),
               "fingerprint": json.dumps(items[vid].fingerprint, sort_keys=True), "seconds": 0.0}
        rows.append(recorded_time(row, recorded.get(vid, [])))
    return rows


def pack_rows(workdir: Path, info: dict, fmt: str) -> list[dict]:
    from tsnpipe.cmd_pack import pack_items
    from tsnpipe.stages.store.pack import read_video, stored_videos

    store = Path(info.get("inputs", {}).get("store") or "")
    if not store.is_dir():
        return []
    output = store.relative_to(workdir).as_posix() if store.is_relative_to(workdir) else str(store)
    stored = stored_videos(store, fmt)
    rows = []
    for item in pack_items(workdir):
        entry = stored.get(item.video_id)
        if entry is None:
            continue
        try:
            video = read_video(workdir, item.video_id)
        except Exception:  # an unreadable folder: that video is packed again by the next run
            continue
        layout = info["params"].get("flow_layout", "images") if video.counts["flow_x"] else "images"
        if video.checksum != entry["checksum"] or entry.get("flow_layout", "images") != layout:
            continue
        rows.append({"video_id": item.video_id, "status": "done", "store": str(store), "format": fmt,
                     "location": entry["location"], "checksum": video.checksum, "rgb": video.counts["rgb"],
                     "flow_pairs": video.counts["flow_x"], "bytes": video.nbytes, "unchanged": True, "error": None,
                     "output": output, "params_hash": params_hash(info["params"]),
                     "fingerprint": json.dumps(item.fingerprint, sort_keys=True), "source": item.source})
    return rows


def repair_stage(workdir: Path, stage: str) -> str:
    """Set the stage's damaged table aside, then add rows for complete outputs the manifest lacks."""
    note = ""
    try:
        manifest = Manifest(workdir, stage)
    except ManifestError:
        table = manifest_path(workdir, stage)
        aside = damaged_name(table)
        os.replace(table, aside)
        note = f"; the damaged table was set aside as {aside.name}"
        manifest = Manifest(workdir, stage)
    info_path = run_info_path(workdir, stage)
    try:
        info = json.loads(info_path.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return f"{stage}: no readable {info_path.name}, so its rows cannot be rebuilt; its next run redoes them{note}"
    if stage == "frames":
        found = frames_rows(workdir, info)
    elif stage == "flow":
        found = flow_rows(workdir, info)
    elif stage.startswith("pack-"):
        found = pack_rows(workdir, info, stage.removeprefix("pack-"))
    else:
        return f"{stage}: not a stage tsnpipe can rebuild from outputs{note}"
    added = 0
    for row in found:
        if manifest.rows.get(row["video_id"], {}).get("status") != "done":
            manifest.record(row)
            added += 1
    manifest.compact()
    return f"{stage}: {added:,} rows rebuilt from the outputs on disk, {len(manifest.rows):,} rows in all{note}"


def repair_workdir(workdir: Path) -> list[str]:
    """Repair every stage that has run in this workdir (it left a `<stage>.run.json`), in chain order."""
    from tsnpipe.status import chain_order

    folder = Path(workdir) / MANIFEST_DIR
    stages = {p.name.split(".")[0] for p in folder.glob("*.run.json")} | {
        p.name.split(".")[0] for p in folder.glob("*.parquet")}
    return [repair_stage(Path(workdir), stage) for stage in chain_order(sorted(stages))]
