"""Random-access reads of frames and flow images: JPEG folders vs the HDF5 and LMDB stores.

Builds a workdir from the bundled sample clips (10 fps, 340x256, ffmpeg q2; flow from OpenCV's DIS at the
tsnpipe quantization), copies it `--copies` times under new video ids so the store holds thousands of
images, packs it both ways, then times random (video, position) reads like a TSN data loader makes:
raw JPEG bytes, and decoded arrays, with 1 and N reader processes (each opens its own handle); and decoded
flow pairs (x and y of one position, `Reader.flow_stack`) from the folders, the stores with flow as image files
and the stores in the `pairs` flow layout (`--flow-layout pairs`, one LZ4 array per pair).
Prints one JSON object. The page cache is warm (every source was just written or read once). Each rate
is the best of `--repeats` runs: on a shared machine the slower runs measure the neighbours.

    python benchmarks/store_read.py --copies 30 --processes 2 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from multiprocessing import get_context
from pathlib import Path

import cv2
import numpy as np

from tsnpipe.stages.store.pack import pack_videos
from tsnpipe.stages.store.reader import open_reader

SAMPLES = Path(__file__).resolve().parents[1] / "pipeline" / "samples" / "videos"


def build_workdir(workdir: Path, copies: int) -> list[str]:
    import imageio_ffmpeg

    ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST)
    base = []
    for clip in sorted(SAMPLES.glob("*/*.avi")):
        video_id = clip.relative_to(SAMPLES).with_suffix("").as_posix()
        frames = workdir / "frames" / video_id
        frames.mkdir(parents=True)
        subprocess.run([ffmpeg, "-v", "error", "-i", str(clip), "-vf", "fps=10,scale=340:256", "-q:v", "2",
                        str(frames / "img_%05d.jpg")], check=True)
        flow = workdir / "flow" / video_id
        flow.mkdir(parents=True)
        grey = [cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) for p in sorted(frames.glob("img_*.jpg"))]
        for i in range(len(grey) - 1):
            q = np.clip(np.rint(255 * (dis.calc(grey[i], grey[i + 1], None) + 20) / 40), 0, 255).astype(np.uint8)
            cv2.imwrite(str(flow / f"flow_x_{i + 1:05d}.jpg"), q[..., 0])
            cv2.imwrite(str(flow / f"flow_y_{i + 1:05d}.jpg"), q[..., 1])
        base.append(video_id)
    ids = list(base)
    for copy in range(1, copies):
        for video_id in base:
            new_id = f"{video_id}_copy{copy:03d}"
            for root in ("frames", "flow"):
                shutil.copytree(workdir / root / video_id, workdir / root / new_id)
            ids.append(new_id)
    return sorted(ids)


def disk_usage(path: Path) -> dict:
    files = [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else [path]
    return {"files": len(files), "bytes": sum(p.stat().st_blocks * 512 for p in files),
            "apparent_bytes": sum(p.stat().st_size for p in files)}


def plan_reads(reader, ids: list[str], kind: str, n: int, seed: int) -> list[tuple[str, int]]:
    rng = random.Random(seed)
    counts = {v: reader.count(v, kind) for v in ids}
    picks = []
    for _ in range(n):
        video_id = rng.choice(ids)
        picks.append((video_id, rng.randrange(counts[video_id])))
    return picks


def read_all(args) -> int:
    reader, kind, picks, decode = args
    cv2.setNumThreads(1)
    for video_id, position in picks:
        if kind == "pair":
            reader.flow_stack(video_id, [position])
        else:
            reader.frames(video_id, [position], kind, decode=decode)
    return len(picks)


def timed(reader, kind: str, picks, decode: bool, processes: int) -> float:
    """Reads per second over `picks`, split across `processes` processes (1: this process)."""
    if processes == 1:
        read_all((reader, kind, picks[:1], decode))  # open outside the clock
        started = time.perf_counter()
        read_all((reader, kind, picks, decode))
        return len(picks) / (time.perf_counter() - started)
    chunks = [picks[i::processes] for i in range(processes)]
    with get_context("spawn").Pool(processes) as pool:
        pool.map(read_all, [(reader, kind, c[:10], decode) for c in chunks])  # start and import outside the clock
        started = time.perf_counter()
        pool.map(read_all, [(reader, kind, c, decode) for c in chunks])
        return len(picks) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=30)
    parser.add_argument("--processes", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--raw-reads", type=int, default=20000)
    parser.add_argument("--decoded-reads", type=int, default=3000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--keep", type=Path, help="build the workdir here and keep it")
    args = parser.parse_args()
    cv2.setNumThreads(1)
    workdir = args.keep or Path(tempfile.mkdtemp(prefix="tsnpipe-store-bench-"))
    try:
        started = time.perf_counter()
        ids = build_workdir(workdir, args.copies)
        build_s = time.perf_counter() - started
        sources = {"folders": workdir}
        pack_s = {}
        for fmt, name in (("hdf5", "frames.hdf5"), ("lmdb", "frames.lmdb")):
            sources[fmt] = workdir / "stores" / name
            started = time.perf_counter()
            pack_videos(workdir, sources[fmt], fmt, ids)
            pack_s[fmt] = round(time.perf_counter() - started, 2)
            pairs = f"{fmt}_pairs"
            sources[pairs] = workdir / "stores" / name.replace("frames.", "pairs.")
            started = time.perf_counter()
            pack_videos(workdir, sources[pairs], fmt, ids, flow_layout="pairs")
            pack_s[pairs] = round(time.perf_counter() - started, 2)
        probe = open_reader(workdir)
        rgb_images = sum(probe.count(v, "rgb") for v in ids)
        flow_images = 2 * sum(probe.count(v, "flow_x") for v in ids)
        result = {
            "repeats": args.repeats,
            "load_average": os.getloadavg(),
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": sys.version.split()[0],
                        "gpu": None},
            "data": {"videos": len(ids), "rgb_images": rgb_images, "flow_images": flow_images,
                     "frame_size": "340x256", "build_s": round(build_s, 1), "pack_s": pack_s},
            "disk": {"folders": {k: disk_usage(workdir / "frames")[k] + disk_usage(workdir / "flow")[k]
                                 for k in ("files", "bytes", "apparent_bytes")},
                     **{name: disk_usage(path) for name, path in sources.items() if name != "folders"}},
            "reads_per_s": {},
        }
        plans = [(kind, decode, n) for kind in ("rgb", "flow_x")
                 for decode, n in ((False, args.raw_reads), (True, args.decoded_reads))]
        for kind, decode, n in [*plans, ("pair", True, args.decoded_reads)]:
            for name, path in sources.items():
                if name.endswith("_pairs") and kind != "pair":
                    continue
                reader = open_reader(path)
                picks = plan_reads(reader, ids, "flow_x" if kind == "pair" else kind, n, seed=1)
                read_all((reader, kind, picks[:200], decode))  # warm the page cache
                for processes in sorted({1, args.processes}):
                    key = f"{kind} {'decoded' if decode else 'bytes'} {processes}p"
                    rate = max(timed(reader, kind, picks, decode, processes) for _ in range(args.repeats))
                    result["reads_per_s"].setdefault(key, {})[name] = round(rate)
                reader.close()
        print(json.dumps(result, indent=1))
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
