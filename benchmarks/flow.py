"""Throughput and accuracy of the two TV-L1 backends, in one run, printed as one JSON object.

Pairs are consecutive 10 fps frames of the bundled clips, resized to 340x256 and turned grey, as
`extract-frames --size 340x256` and `extract-flow` see them; the flow is computed in memory (no JPEG
reading or writing). Measured: OpenCV and the torch backend on the CPU, each in 1 process with 1 thread
(the per-core comparison, also in CPU seconds) and in one 1-thread process per core; torch on CUDA at
batch sizes 8/32/64/128 when a GPU is present. Each backend also reports its mean end-point error on the
Middlebury pairs in tests/data/middlebury.
Usage: python benchmarks/flow.py [--pairs 12] [--cuda-pairs 256] [--skip-epe]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from multiprocessing import get_context
from pathlib import Path

import cv2
import numpy as np
import torch

from tsnpipe.stages.flow import FlowParams
from tsnpipe.stages.flow.opencv_tvl1 import create_tvl1, opencv_flow
from tsnpipe.stages.flow.torch_tvl1 import compiled_iteration, tvl1_flow, tvl1_iteration

REPO = Path(__file__).resolve().parents[1]
CLIPS = sorted((REPO / "pipeline" / "samples" / "videos").glob("*/*.avi"))
MIDDLEBURY = REPO / "tests" / "data" / "middlebury"
SIZE = (340, 256)


def clip_pairs(count: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """`count` consecutive-frame pairs at 10 fps and 340x256, drawn in turn from every bundled clip."""
    per_clip = []
    for clip in CLIPS:
        capture = cv2.VideoCapture(str(clip))
        fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
        frames, index, wanted = [], 0, 0.0
        while len(frames) < count // len(CLIPS) + 2:
            ok, frame = capture.read()
            if not ok:
                break
            if index >= round(wanted):
                grey = cv2.cvtColor(cv2.resize(frame, SIZE, interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2GRAY)
                frames.append(grey)
                wanted += fps / 10.0
            index += 1
        per_clip.append(list(zip(frames[:-1], frames[1:])))
    pairs = [pair for group in zip(*per_clip) for pair in group]
    return (pairs * (count // max(len(pairs), 1) + 1))[:count]


def read_flo(path: Path) -> np.ndarray:
    data = path.read_bytes()
    width, height = np.frombuffer(data[4:12], np.int32)
    return np.frombuffer(data[12:], np.float32).reshape(height, width, 2)


def middlebury_epe(flow_fn) -> dict[str, float]:
    """Mean end-point error per Middlebury pair, unknown ground truth (> 1e9) left out."""
    errors = {}
    for name in ("RubberWhale", "Grove2"):
        first = cv2.imread(str(MIDDLEBURY / name / "frame10.png"), cv2.IMREAD_GRAYSCALE)
        second = cv2.imread(str(MIDDLEBURY / name / "frame11.png"), cv2.IMREAD_GRAYSCALE)
        truth = read_flo(MIDDLEBURY / name / "flow10.flo")
        known = (np.abs(truth) < 1e9).all(axis=-1)
        errors[name] = round(float(np.linalg.norm(flow_fn(first, second) - truth, axis=-1)[known].mean()), 4)
    return errors


def _opencv_worker(pair):
    cv2.setNumThreads(1)
    return opencv_flow(create_tvl1(FlowParams()), *pair).shape


def _torch_worker(pair):
    torch.set_num_threads(1)
    batch = torch.from_numpy(np.stack(pair))[:, None].float()
    with torch.inference_mode():
        return tuple(tvl1_flow(batch[:1], batch[1:], FlowParams(backend="torch")).shape)


def _ready(_):
    return os.getpid()


def bench_opencv(pairs) -> dict:
    """One process, one OpenCV thread; CPU seconds too, which other load on the machine disturbs less."""
    cv2.setNumThreads(1)
    tvl1 = create_tvl1(FlowParams())
    start, cpu_start = time.perf_counter(), time.process_time()
    for pair in pairs:
        opencv_flow(tvl1, *pair)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    return {"processes": 1, "pairs": len(pairs), "seconds": round(seconds, 2),
            "pairs_per_s": round(len(pairs) / seconds, 3), "cpu_s_per_pair": round(cpu / len(pairs), 3)}


def bench_processes(pairs, processes: int, worker) -> dict:
    """One pair at a time in each of `processes` processes with one thread each, as `extract-flow -j N` runs."""
    with get_context("spawn").Pool(processes) as pool:
        pool.map(_ready, range(processes))  # start-up (imports) is not flow time
        start = time.perf_counter()
        list(pool.imap_unordered(worker, pairs, chunksize=1))
        seconds = time.perf_counter() - start
    return {"processes": processes, "pairs": len(pairs), "seconds": round(seconds, 2),
            "pairs_per_s": round(len(pairs) / seconds, 3)}


def torch_pairs_per_s(pairs, device: torch.device, batch: int, step=tvl1_iteration) -> dict:
    params = FlowParams(backend="torch")
    stacked = torch.from_numpy(np.stack([np.stack(p) for p in pairs])).float()  # (N, 2, H, W)
    with torch.inference_mode():
        warm = stacked[: min(batch, len(pairs))].to(device)
        tvl1_flow(warm[:, :1], warm[:, 1:], params, step)  # warm-up: kernels, allocator, compilation
        if device.type == "cuda":
            torch.cuda.synchronize()
        start, cpu_start = time.perf_counter(), time.process_time()
        for first in range(0, len(pairs), batch):
            chunk = stacked[first : first + batch].to(device, non_blocking=True)
            tvl1_flow(chunk[:, :1], chunk[:, 1:], params, step).cpu()
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    figures = {"batch": batch, "pairs": len(pairs), "seconds": round(seconds, 2),
               "pairs_per_s": round(len(pairs) / seconds, 3)}
    if device.type == "cpu" and torch.get_num_threads() == 1:
        figures["cpu_s_per_pair"] = round(cpu / len(pairs), 3)
    return figures


def torch_epe(device: torch.device) -> dict[str, float]:
    def flow(first, second):
        as_batch = lambda image: torch.from_numpy(image)[None, None].float().to(device)  # noqa: E731
        with torch.inference_mode():
            out = tvl1_flow(as_batch(first), as_batch(second), FlowParams(backend="torch"))
        return out[0].permute(1, 2, 0).cpu().numpy()

    return middlebury_epe(flow)


def machine() -> dict:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    info = {"cpu": model, "cores": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
            "opencv": cv2.__version__, "gpu": None}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=12, help="pairs for each CPU measurement")
    parser.add_argument("--cuda-pairs", type=int, default=256, help="pairs for each CUDA measurement")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile'd iterations on CUDA")
    parser.add_argument("--skip-epe", action="store_true", help="leave out the Middlebury accuracy")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    pairs = clip_pairs(args.pairs)
    result = {"machine": machine(), "frame_size": f"{SIZE[0]}x{SIZE[1]}", "params": FlowParams().hashed()}

    opencv = {"one_process": bench_opencv(pairs), "all_cores": bench_processes(pairs, cores, _opencv_worker)}
    if not args.skip_epe:
        cv2.setNumThreads(1)
        tvl1 = create_tvl1(FlowParams())
        opencv["middlebury_epe"] = middlebury_epe(lambda a, b: opencv_flow(tvl1, a, b))
    result["opencv"] = opencv

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    cpu = {"one_thread": torch_pairs_per_s(pairs, torch.device("cpu"), 1)}
    cpu["all_cores"] = bench_processes(pairs, cores, _torch_worker)
    torch.set_num_threads(threads)
    if not args.skip_epe:
        cpu["middlebury_epe"] = torch_epe(torch.device("cpu"))
    result["torch_cpu"] = cpu
    # Above 1: the torch backend is faster than OpenCV on one core.
    result["torch_vs_opencv_one_core"] = {
        "pairs_per_s_ratio": round(cpu["one_thread"]["pairs_per_s"] / opencv["one_process"]["pairs_per_s"], 3),
        "cpu_time_ratio": round(opencv["one_process"]["cpu_s_per_pair"] / cpu["one_thread"]["cpu_s_per_pair"], 3)}

    if torch.cuda.is_available():
        device = torch.device("cuda")
        gpu_pairs = clip_pairs(args.cuda_pairs)
        cuda = {f"batch_{b}": torch_pairs_per_s(gpu_pairs, device, b) for b in (8, 32, 64, 128)}
        if args.compile:
            step = compiled_iteration()
            cuda |= {f"compiled_batch_{b}": torch_pairs_per_s(gpu_pairs, device, b, step) for b in (32, 128)}
        if not args.skip_epe:
            cuda["middlebury_epe"] = torch_epe(device)
        result["torch_cuda"] = cuda
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
