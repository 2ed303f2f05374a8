"""How closely the torch TV-L1 backend agrees with OpenCV's DualTVL1 at the same params, and what each costs.

Real pairs held out from the tests (by default the clips under ../shared/data: UCF101, HMDB51, Kinetics
from torchvision's test assets, OpenCV's vtest.avi) are decoded as `extract-frames` does (10 fps, short
side 256, or --short-side for a quicker run) and `--pairs-per-video` pairs are taken evenly through each
clip. Both backends compute each pair's flow with the FlowParams defaults, one pair at a time on one
thread; the flow images are compared as the flow stage quantizes them (clip to +-bound, 0..255), before
JPEG. Printed as one JSON object:
- real_pairs: per pair and over all (mean, median, lowest pair), the fraction of flow-image pixels within
  one grey level of OpenCV's; with --noise-baseline, the same fraction for OpenCV against itself with +-0.5
  grey levels of uniform noise on the first image (how much any second TV-L1 can be expected to agree on
  that pair), how many pairs reach it and the largest shortfall below it;
- middlebury: end-point error against ground truth of each backend on the pairs in tests/data;
- basketball: OpenCV's large-motion sample pair at full size (no ground truth), the mean end-point
  distance between the two backends' flows and their flow-image agreement;
- cpu_seconds_per_real_pair: the mean over the real pairs for each backend (process time, one thread).
Usage: python benchmarks/flow_agreement.py [VIDEO_OR_GLOB ...] [--short-side 128] [--pairs-per-video 2]
       [--noise-baseline] [--opencv-cache DIR]
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from tsnpipe.stages.flow import FlowParams
from tsnpipe.stages.flow.groundtruth import endpoint_error, read_flo
from tsnpipe.stages.flow.images import list_frames, quantize, read_grey
from tsnpipe.stages.flow.opencv_tvl1 import create_tvl1, opencv_flow
from tsnpipe.stages.flow.torch_tvl1 import tvl1_flow
from tsnpipe.stages.frames import FrameParams, extract_video

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
DEFAULT_VIDEOS = [
    "ucf101_videos/UCF-101/*/*.avi",
    "hmdb51_videos/*/*.avi",
    "torchvision_test_videos/*.mp4",
    "opencv_samples/vtest.avi",
]
BASKETBALL = (SHARED / "opencv_samples" / "basketball1.png", SHARED / "opencv_samples" / "basketball2.png")
MIDDLEBURY = REPO / "tests" / "data" / "middlebury"


def within_one(first: np.ndarray, second: np.ndarray, bound: float) -> float:
    """Fraction of flow-image values (x and y images together) within one grey level of each other."""
    difference = np.abs(quantize(first, bound).astype(int) - quantize(second, bound).astype(int))
    return float(np.mean(difference <= 1))


def timed(compute, *images) -> tuple[np.ndarray, float]:
    start = time.process_time()
    flow = compute(*images)
    return flow, time.process_time() - start


def torch_backend(params: FlowParams):
    def compute(first: np.ndarray, second: np.ndarray) -> np.ndarray:
        as_batch = lambda image: torch.from_numpy(np.ascontiguousarray(image))[None, None].float()  # noqa: E731
        with torch.inference_mode():
            return tvl1_flow(as_batch(first), as_batch(second), params)[0].permute(1, 2, 0).numpy()

    return compute


def opencv_backend(params: FlowParams, cache: Path | None):
    """OpenCV's flow, read from `cache` when this pair was computed before (its time then is the cached one)."""
    tvl1 = create_tvl1(params)

    def compute(first: np.ndarray, second: np.ndarray) -> tuple[np.ndarray, float]:
        key = hashlib.sha1(first.tobytes() + second.tobytes() + repr(params.hashed()).encode()).hexdigest()[:20]
        if cache is not None and (cache / f"{key}.npz").exists():
            stored = np.load(cache / f"{key}.npz")
            return stored["flow"], float(stored["seconds"])
        flow, seconds = timed(lambda a, b: opencv_flow(tvl1, a, b), first, second)
        if cache is not None:
            cache.mkdir(parents=True, exist_ok=True)
            np.savez(cache / f"{key}.npz", flow=flow, seconds=seconds)
        return flow, seconds

    return compute


def noisy_opencv(params: FlowParams, first: np.ndarray, second: np.ndarray, seed: int) -> np.ndarray:
    """OpenCV's flow with +-0.5 grey levels of uniform noise on the first image (float input is 0..1)."""
    noise = np.random.default_rng(seed).uniform(-0.5, 0.5, first.shape)
    return opencv_flow(create_tvl1(params), ((first + noise) / 255.0).astype(np.float32),
                       (second / 255.0).astype(np.float32))


def video_pairs(paths: list[Path], frames: FrameParams, per_video: int, temp: Path):
    """(name, first, second) grey pairs, `per_video` evenly through each clip's extracted frames."""
    for number, video in enumerate(paths):
        folder = temp / f"{number:03d}"
        extract_video(video, folder, frames)
        names = list_frames(folder)
        for k in range(per_video):
            index = (len(names) - 1) * (k + 1) // (per_video + 1)
            if index + 1 < len(names):
                name = f"{video.parent.name}/{video.name}#{index + 1}"
                yield name, read_grey(names[index]), read_grey(names[index + 1])


def default_videos() -> list[str]:
    return [str(SHARED / pattern) for pattern in DEFAULT_VIDEOS] if SHARED.is_dir() else []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("videos", nargs="*", help="videos or globs (default: the clips under ../shared/data)")
    parser.add_argument("--short-side", type=int, default=256)
    parser.add_argument("--pairs-per-video", type=int, default=2)
    parser.add_argument("--noise-baseline", action="store_true", help="also OpenCV against itself with noise")
    parser.add_argument("--opencv-cache", type=Path, help="keep OpenCV's flows here across runs")
    parser.add_argument("--skip-full-size", action="store_true", help="leave out Middlebury and basketball")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    params = FlowParams(backend="torch")
    ours, reference = torch_backend(params), opencv_backend(params, args.opencv_cache)
    videos = sorted({Path(p) for pattern in (args.videos or default_videos()) for p in glob.glob(pattern)})
    seconds = {"torch": [], "opencv": []}  # of the real pairs
    pairs = {}

    def compare(first, second, timings=None):
        theirs, their_seconds = reference(first, second)
        flow, our_seconds = timed(ours, first, second)
        if timings is not None:
            timings["torch"].append(our_seconds)
            timings["opencv"].append(their_seconds)
        return flow, theirs

    with tempfile.TemporaryDirectory() as temp:
        frames = FrameParams(fps=10.0, short_side=args.short_side)
        for number, (name, first, second) in enumerate(video_pairs(videos, frames, args.pairs_per_video, Path(temp))):
            flow, theirs = compare(first, second, seconds)
            entry = {"within_one": round(within_one(flow, theirs, params.bound), 5),
                     "size": f"{first.shape[1]}x{first.shape[0]}"}
            if args.noise_baseline:
                entry["noise_baseline"] = round(within_one(noisy_opencv(params, first, second, number), theirs,
                                                           params.bound), 5)
            pairs[name] = entry
            print(json.dumps({name: entry}), file=sys.stderr, flush=True)
    fractions = [entry["within_one"] for entry in pairs.values()]
    results = {
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}, torch and OpenCV on one thread",
        "short_side": args.short_side,
        "real_pairs": {"pairs": pairs, "count": len(pairs),
                       "within_one_all": round(float(np.mean(fractions)), 5) if fractions else None,
                       "within_one_min": round(min(fractions), 5) if fractions else None},
    }
    if fractions:
        results["real_pairs"]["within_one_median"] = round(float(np.median(fractions)), 5)
    if args.noise_baseline and pairs:
        shortfall = [entry["noise_baseline"] - entry["within_one"] for entry in pairs.values()]
        results["real_pairs"].update({
            "noise_baseline_all": round(float(np.mean([e["noise_baseline"] for e in pairs.values()])), 5),
            "pairs_at_or_above_noise_baseline": sum(gap <= 0 for gap in shortfall),
            "largest_shortfall_below_noise_baseline": round(max(0.0, max(shortfall)), 5),
        })
    if not args.skip_full_size:
        results["middlebury"] = {}
        for folder in sorted(p for p in MIDDLEBURY.iterdir() if (p / "flow10.flo").exists()):
            first = cv2.imread(str(folder / "frame10.png"), cv2.IMREAD_GRAYSCALE)
            second = cv2.imread(str(folder / "frame11.png"), cv2.IMREAD_GRAYSCALE)
            truth = read_flo(folder / "flow10.flo")
            flow, theirs = compare(first, second)
            results["middlebury"][folder.name] = {"epe_torch": round(endpoint_error(flow, truth), 4),
                                                  "epe_opencv": round(endpoint_error(theirs, truth), 4),
                                                  "torch_to_opencv": round(endpoint_error(flow, theirs), 4)}
            print(json.dumps({folder.name: results["middlebury"][folder.name]}), file=sys.stderr, flush=True)
        if all(path.exists() for path in BASKETBALL):
            first, second = (cv2.imread(str(path), cv2.IMREAD_GRAYSCALE) for path in BASKETBALL)
            flow, theirs = compare(first, second)
            results["basketball"] = {"torch_to_opencv_epe": round(endpoint_error(flow, theirs), 4),
                                     "within_one": round(within_one(flow, theirs, params.bound), 5),
                                     "size": f"{first.shape[1]}x{first.shape[0]}"}
    results["cpu_seconds_per_real_pair"] = {backend: round(float(np.mean(values)), 3)
                                            for backend, values in seconds.items() if values}
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
