"""Throughput and accuracy of the TV-L1 backends, in one run, printed as one JSON object.

Pairs are consecutive 10 fps frames of the bundled clips, resized (340x256 unless --size) and turned grey,
as `extract-frames --size 340x256` and `extract-flow` see them. Sections:
- kernel: the torch backend in memory (no JPEG reading or writing) on the device (CUDA when present),
  per batch: pairs/s, primal-dual steps run and mean pairs active per step, with slots refilled as
  pairs finish (what extract-flow runs) and, for one batch size, a fixed batch that waits for its
  slowest pair at every warp (the earlier scheme) for comparison; with the refill, also the fused
  kernels' memory traffic per pair and the bandwidth reached (at full bandwidth B, pairs/s = B / traffic);
- end_to_end: `tsnpipe extract-flow --backend torch` on frames that the real `extract-frames` cut from
  the bundled clips copied until there are at least --e2e-pairs pairs; pairs/s over the command's wall time;
- host: the CPU work of extract-flow per pair whatever computes the flow (decode a frame, quantize and encode two
  flow images), per core and on a thread per core: the end-to-end rate the machine's cores can feed;
- cpu (unless --skip-cpu): OpenCV and the torch backend per core (1 process, 1 thread, also in CPU
  seconds) and in one 1-thread process per core;
- middlebury_epe (unless --skip-epe): mean end-point error per pair in tests/data/middlebury.
- against_opencv (with --against-opencv, alone): `tsnpipe extract-flow` with its default backend (auto: on
  the CPU, the faster of the two timed on the first pairs) against `--backend opencv` on the same frames (the
  bundled clips at --e2e-fps and --size), each on a fresh copy of the frames, A/B alternated (ABBA), on the machine
  as it is and with two busy processes beside them (started and stopped here), the load average beside each run.
  CPU run: python benchmarks/flow.py --against-opencv --e2e-fps 2 --size 170x128
Usage on a GPU: python benchmarks/flow.py --skip-cpu (without ffmpeg there: `--prepare-e2e DIR` where ffmpeg
is, then `--e2e-workdir DIR` on the GPU)
Tiny CPU run: python benchmarks/flow.py --size 64x48 --iterations 10x2 --kernel-pairs 8 --batches 2,4 --fixed-batch 4
    --e2e-pairs 20 --e2e-fps 1 --host-pairs 50 --skip-cpu --skip-epe
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import cv2
import numpy as np
import torch

from tsnpipe.stages.flow import FlowParams
from tsnpipe.stages.flow.groundtruth import endpoint_error, read_flo
from tsnpipe.stages.flow.images import list_frames, read_grey, write_flow_pair
from tsnpipe.stages.flow.opencv_tvl1 import create_tvl1, opencv_flow
from tsnpipe.stages.flow.refill import RefillSolver
from tsnpipe.stages.flow.torch_tvl1 import iteration_for, tvl1_flow
from tsnpipe.stages.flow.triton_tvl1 import BYTES_PER_PIXEL_STEP

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "pipeline" / "samples" / "videos"
CLIPS = sorted(SAMPLES.glob("*/*.avi"))
MIDDLEBURY = REPO / "tests" / "data" / "middlebury"
SIZE = (340, 256)


def clip_pairs(count: int, size=SIZE) -> list[tuple[np.ndarray, np.ndarray]]:
    """`count` consecutive-frame pairs at 10 fps and `size`, drawn in turn from every bundled clip."""
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
                grey = cv2.cvtColor(cv2.resize(frame, size, interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2GRAY)
                frames.append(grey)
                wanted += fps / 10.0
            index += 1
        per_clip.append(list(zip(frames[:-1], frames[1:])))
    pairs = [pair for group in zip(*per_clip) for pair in group]
    return (pairs * (count // max(len(pairs), 1) + 1))[:count]


def middlebury_epe(flow_fn) -> dict[str, float]:
    """Mean end-point error per Middlebury pair, unknown ground truth (> 1e9) left out."""
    errors = {}
    for name in ("RubberWhale", "Grove2"):
        first = cv2.imread(str(MIDDLEBURY / name / "frame10.png"), cv2.IMREAD_GRAYSCALE)
        second = cv2.imread(str(MIDDLEBURY / name / "frame11.png"), cv2.IMREAD_GRAYSCALE)
        errors[name] = round(endpoint_error(flow_fn(first, second), read_flo(MIDDLEBURY / name / "flow10.flo")), 4)
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


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def refill_run(pairs, params: FlowParams, device: torch.device, batch: int, graphs: bool | None = None) -> dict:
    """The extract-flow scheme in memory: slots refilled as pairs finish; flow brought back to the host.
    `graphs` False launches every step from Python (on CUDA the default replays rounds from CUDA graphs)."""
    solver = RefillSolver(params, device, batch, iteration_for(device), graphs=graphs)
    source = ((k, first, second) for k, (first, second) in enumerate(pairs))
    sync(device)
    start, cpu_start = time.perf_counter(), time.process_time()
    for finished in solver.solve(source):
        torch.stack([flow for _, flow in finished]).cpu()
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    stats = solver.stats
    figures = {"batch": batch, "graphs": solver.graphs, "pairs": len(pairs), "seconds": round(seconds, 2),
               "pairs_per_s": round(len(pairs) / seconds, 2), "steps": stats.steps,
               "mean_active_pairs": round(stats.mean_active, 1),
               "mean_active_while_fed": round(stats.mean_active_while_fed, 1),
               "steps_per_pair": round(stats.steps / len(pairs), 1),
               "pair_steps_per_pair": round(stats.pair_steps / len(pairs), 1),
               "looks_per_pair": round(stats.looks / len(pairs), 2)}  # a look is the solver's one sync
    # The fused kernels' memory traffic for this work: what a GPU at full bandwidth would need, and what it got.
    traffic = stats.pixel_steps * BYTES_PER_PIXEL_STEP / 1e9
    figures["fused_traffic_GB_per_pair"] = round(traffic / len(pairs), 3)
    figures["fused_traffic_GB_per_s"] = round(traffic / seconds, 1)
    if device.type == "cpu" and torch.get_num_threads() == 1:
        figures["cpu_s_per_pair"] = round(cpu / len(pairs), 3)
    if device.type == "cuda":  # the host's share: Python's launches and bookkeeping, the syncs' spinning
        figures["host_cpu_ms_per_pair"] = round(cpu / len(pairs) * 1000, 2)
        figures["us_per_step"] = round(seconds / max(stats.steps, 1) * 1e6, 1)
    return figures


class CountingStep:
    """The device's step, counting launches and the pairs each one computed."""

    def __init__(self, step):
        self.step, self.steps, self.pair_steps = step, 0, 0

    def __call__(self, u, *args):
        self.steps += 1
        self.pair_steps += u.shape[0]
        return self.step(u, *args)


def fixed_run(pairs, params: FlowParams, device: torch.device, batch: int) -> dict:
    """The earlier scheme: batches of `batch` pairs, each warp waiting for its slowest pair."""
    step = CountingStep(iteration_for(device))
    stacked = torch.from_numpy(np.stack([np.stack(p) for p in pairs])).float()  # (N, 2, H, W)
    sync(device)
    start = time.perf_counter()
    for first in range(0, len(pairs), batch):
        chunk = stacked[first : first + batch].to(device, non_blocking=True)
        tvl1_flow(chunk[:, :1], chunk[:, 1:], params, step).cpu()
    seconds = time.perf_counter() - start
    batches = -(-len(pairs) // batch)
    return {"batch": batch, "pairs": len(pairs), "seconds": round(seconds, 2),
            "pairs_per_s": round(len(pairs) / seconds, 2), "steps_per_batch": step.steps // batches,
            "mean_active_pairs": round(step.pair_steps / max(step.steps, 1), 1)}


def so_far(name: str, figures: dict) -> dict:
    """A section's figures on stderr as soon as they are measured (a run cut short still reports them)."""
    print(json.dumps({name: figures}), file=sys.stderr, flush=True)
    return figures


def kernel(pairs, params: FlowParams, device: torch.device, batches: list[int], fixed_batch: int | None) -> dict:
    with torch.inference_mode():
        refill_run(pairs[: max(2, min(batches))], params, device, min(batches))  # warm-up: compilation, allocator
        result = {}
        for b in batches:
            result[f"refill_batch_{b}"] = so_far(f"refill_batch_{b}", refill_run(pairs, params, device, b))
        if device.type == "cuda":  # the same without CUDA graphs: what the graphs save
            b = 128 if 128 in batches else max(batches)
            result[f"refill_batch_{b}_no_graphs"] = so_far(f"refill_batch_{b}_no_graphs",
                                                           refill_run(pairs, params, device, b, graphs=False))
        if fixed_batch:
            result[f"fixed_batch_{fixed_batch}"] = so_far("fixed_batch", fixed_run(pairs, params, device, fixed_batch))
    return result


def tsnpipe(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-c", "from tsnpipe.cli import main; main()", *args]
    return subprocess.run(command, capture_output=True, text=True, check=False)


def frames_workdir(workdir: Path, pairs_wanted: int, size: tuple[int, int], fps: float) -> float:
    """`extract-frames` into `workdir` on copies of the bundled clips until there are enough pairs; its seconds."""
    videos = workdir.parent / f"{workdir.name}-videos"
    copies, pairs, frames_s = 0, 0, 0.0
    try:
        while pairs < pairs_wanted:
            copies += 1
            for clip in CLIPS:
                target = videos / clip.parent.name / f"{clip.stem}_copy{copies}{clip.suffix}"
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(clip, target)
            start = time.perf_counter()
            done = tsnpipe("extract-frames", str(videos), "-w", str(workdir), "--fps", f"{fps:g}", "--size",
                           f"{size[0]}x{size[1]}", "--no-progress")
            frames_s += time.perf_counter() - start
            if done.returncode:
                raise SystemExit(f"extract-frames failed: {done.stderr[-2000:]}")
            counts = [int(path.name[4:9]) for path in workdir.glob("frames/*/*/img_*.jpg")]
            pairs = len(counts) - len(list(workdir.glob("frames/*/*")))
    finally:
        shutil.rmtree(videos, ignore_errors=True)
    return frames_s


def end_to_end(pairs_wanted: int, size: tuple[int, int], device: str, batch: int, iterations: str, fps: float,
               prepared: Path | None = None) -> dict:
    """A timed `extract-flow` on frames of the bundled clips: cut here, or a copy of a `--prepare-e2e` workdir
    (for a machine without ffmpeg)."""
    root = Path(tempfile.mkdtemp(prefix="tsnpipe-flow-bench-"))
    try:
        workdir = root / "w"
        if prepared:
            shutil.copytree(prepared, workdir)  # extract-flow is incremental: a rerun on the original would do nothing
            frames_s = None
        else:
            frames_s = round(frames_workdir(workdir, pairs_wanted, size, fps), 2)
        start = time.perf_counter()
        done = tsnpipe("extract-flow", "-w", str(workdir), "--backend", "torch", "--device", device, "--batch",
                       str(batch), "--iterations", iterations, "--no-progress")
        seconds = time.perf_counter() - start
        if done.returncode:
            raise SystemExit(f"extract-flow failed: {done.stderr[-2000:]}{done.stdout[-2000:]}")
        written = len(list(workdir.glob("flow/*/*/flow_x_*.jpg")))
        return {"videos": len(list(workdir.glob("frames/*/*"))), "pairs": written, "device": device, "batch": batch,
                "seconds": round(seconds, 2), "pairs_per_s": round(written / seconds, 2),
                "extract_frames_s": frames_s, "command_line": done.stdout.strip().splitlines()[0]}
    finally:
        shutil.rmtree(root, ignore_errors=True)


def busy(count: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]


def against_opencv(fps: float, repeats: int, size: tuple[int, int]) -> dict:
    """`extract-flow` (default backend) against `extract-flow --backend opencv` on the same frames, quiet and
    beside two busy processes, ABBA, each run on a fresh copy of the frames workdir."""
    root = Path(tempfile.mkdtemp(prefix="tsnpipe-flow-floor-"))
    report = {}
    try:
        frames_workdir(root / "frames", 1, size, fps)
        sides = {"default": (), "opencv": ("--backend", "opencv")}
        for condition, hogs in (("quiet", 0), ("two busy processes", 2)):
            runs = {side: [] for side in sides}
            procs = busy(hogs)
            try:
                for r in range(repeats):
                    for side in (list(sides) if r % 2 == 0 else list(sides)[::-1]):
                        workdir = shutil.copytree(root / "frames", root / f"{side}-{r}-{hogs}")
                        load = os.getloadavg()[0]
                        start = time.perf_counter()
                        done = tsnpipe("extract-flow", "-w", str(workdir), *sides[side], "--no-progress")
                        seconds = time.perf_counter() - start
                        if done.returncode:
                            raise SystemExit(f"extract-flow failed: {done.stderr[-2000:]}{done.stdout[-2000:]}")
                        lines = done.stdout.strip().splitlines()
                        runs[side].append({"s": round(seconds, 2), "load_before": round(load, 2),
                                           "pairs": len(list(workdir.glob("flow/*/*/flow_x_*.jpg"))),
                                           "choice": next((x for x in lines if x.startswith("--backend")), None),
                                           "summary": lines[-1]})
                        shutil.rmtree(workdir)
                        print(json.dumps({condition: {side: runs[side][-1]}}), file=sys.stderr, flush=True)
            finally:
                for proc in procs:
                    proc.kill()
                    proc.wait()
            median = {side: sorted(run["s"] for run in runs[side])[len(runs[side]) // 2] for side in sides}
            report[condition] = {"runs": runs,
                                 "default_s_over_opencv_s": round(median["default"] / median["opencv"], 3)}
        report["busy_over_quiet_default"] = round(
            sorted(run["s"] for run in report["two busy processes"]["runs"]["default"])[repeats // 2]
            / sorted(run["s"] for run in report["quiet"]["runs"]["default"])[repeats // 2], 3)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return report


def host_work(pairs_wanted: int, size: tuple[int, int], params: FlowParams, prepared: Path | None = None) -> dict:
    """What extract-flow asks of the CPU per pair whatever computes the flow: decode a frame (pairs share
    frames) and quantize and encode the two flow images, with the library's own functions, on one core and on
    a thread per core (OpenCV releases the GIL). Flow fields are Farneback's on the same pairs (not timed),
    so the images hold real motion."""
    root = Path(tempfile.mkdtemp(prefix="tsnpipe-flow-host-"))
    try:
        workdir = prepared or root / "w"
        if not prepared:
            frames_workdir(workdir, pairs_wanted, size, 10.0)
        videos = sorted(folder for folder in workdir.glob("frames/*/*") if folder.is_dir())
        jobs = [(paths[k], paths[k + 1], k) for paths in map(list_frames, videos) for k in range(len(paths) - 1)]
        jobs = jobs[:pairs_wanted]
        flows = [cv2.calcOpticalFlowFarneback(read_grey(first), read_grey(second), None, 0.5, 3, 15, 3, 5, 1.2, 0)
                 for first, second, _ in jobs[:32]]
        out = root / "flow"
        out.mkdir()

        def one_pair(job) -> tuple[float, float]:
            _, second, k = job
            start = time.perf_counter()
            read_grey(second)
            decoded = time.perf_counter()
            write_flow_pair(out, k, flows[k % len(flows)], params)
            return decoded - start, time.perf_counter() - decoded

        timings = np.array([one_pair(job) for job in jobs])
        cores = len(os.sched_getaffinity(0))
        with ThreadPoolExecutor(cores) as pool:
            start = time.perf_counter()
            list(pool.map(one_pair, jobs))
            threaded_s = time.perf_counter() - start
        decode_ms, encode_ms = timings.mean(axis=0) * 1000
        return {"pairs": len(jobs), "decode_ms_per_pair": round(decode_ms, 3), "encode_ms_per_pair": round(encode_ms, 3),
                "pairs_per_s_one_core": round(1000 / (decode_ms + encode_ms), 1), "threads": cores,
                "pairs_per_s_all_cores": round(len(jobs) / threaded_s, 1)}
    finally:
        shutil.rmtree(root, ignore_errors=True)


def torch_epe(device: torch.device, params: FlowParams) -> dict[str, float]:
    def flow(first, second):
        as_batch = lambda image: torch.from_numpy(image)[None, None].float().to(device)  # noqa: E731
        with torch.inference_mode():
            out = tvl1_flow(as_batch(first), as_batch(second), params, iteration_for(device))
        return out[0].permute(1, 2, 0).cpu().numpy()

    return middlebury_epe(flow)


def machine() -> dict:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    info = {"cpu": model, "cores": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
            "opencv": cv2.__version__, "gpu": None}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpus"] = torch.cuda.device_count()
    return info


def cpu_comparison(pairs, params: FlowParams, skip_epe: bool) -> dict:
    cores = os.cpu_count() or 1
    opencv = {"one_process": bench_opencv(pairs), "all_cores": bench_processes(pairs, cores, _opencv_worker)}
    if not skip_epe:
        cv2.setNumThreads(1)
        tvl1 = create_tvl1(FlowParams())
        opencv["middlebury_epe"] = middlebury_epe(lambda a, b: opencv_flow(tvl1, a, b))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with torch.inference_mode():
        cpu = {"one_thread": refill_run(pairs, params, torch.device("cpu"), 1)}
    cpu["all_cores"] = bench_processes(pairs, cores, _torch_worker)
    torch.set_num_threads(threads)
    # Above 1: the torch backend is faster than OpenCV on one core.
    ratio = {"pairs_per_s_ratio": round(cpu["one_thread"]["pairs_per_s"] / opencv["one_process"]["pairs_per_s"], 3),
             "cpu_time_ratio": round(opencv["one_process"]["cpu_s_per_pair"] / cpu["one_thread"]["cpu_s_per_pair"], 3)}
    return {"opencv": opencv, "torch": cpu, "torch_vs_opencv_one_core": ratio}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="340x256", help="frame size WxH")
    parser.add_argument("--iterations", default="30x10", help="TV-L1 iterations INNER x OUTER, as extract-flow")
    parser.add_argument("--kernel-pairs", type=int, default=512, help="pairs for each in-memory kernel measurement")
    parser.add_argument("--batches", default=None, help="batch sizes, e.g. 16,64,128,256 (the default on CUDA)")
    parser.add_argument("--fixed-batch", type=int, default=None, help="also time a fixed batch of this size "
                        "(default: 128 on CUDA, none on the CPU); 0 leaves it out")
    parser.add_argument("--e2e-pairs", type=int, default=2000, help="pairs of the end-to-end run; 0 leaves it out")
    parser.add_argument("--e2e-fps", type=float, default=10.0, help="frames per second cut for the end-to-end run")
    parser.add_argument("--e2e-batch", type=int, default=None, help="extract-flow --batch (default: the largest batch)")
    parser.add_argument("--pairs", type=int, default=12, help="pairs for each CPU per-core measurement")
    parser.add_argument("--skip-cpu", action="store_true", help="leave out the CPU per-core comparison with OpenCV")
    parser.add_argument("--skip-epe", action="store_true", help="leave out the Middlebury accuracy")
    parser.add_argument("--host-pairs", type=int, default=1000, help="pairs of the host section (frame decoding, "
                        "flow image encoding, per core and on every core); 0 leaves it out")
    parser.add_argument("--prepare-e2e", type=Path, default=None, help="only cut the end-to-end run's frames into "
                        "this workdir (where ffmpeg is), for --e2e-workdir elsewhere")
    parser.add_argument("--e2e-workdir", type=Path, default=None, help="run the end-to-end section on a copy of "
                        "this --prepare-e2e workdir instead of cutting frames (a machine without ffmpeg)")
    parser.add_argument("--against-opencv", action="store_true", help="only the against_opencv section (CPU)")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each side in each condition (against_opencv)")
    args = parser.parse_args()
    size = tuple(int(v) for v in args.size.lower().split("x"))
    if args.against_opencv:
        print(json.dumps({"machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                          "frames": f"bundled clips at {args.e2e_fps:g} fps, {size[0]}x{size[1]}",
                          "against_opencv": against_opencv(args.e2e_fps, args.repeats, size),
                          "load_after": round(os.getloadavg()[0], 2)}, indent=1))
        return
    if args.prepare_e2e:
        seconds = frames_workdir(args.prepare_e2e, args.e2e_pairs, size, args.e2e_fps)
        print(json.dumps({"prepared": str(args.prepare_e2e), "extract_frames_s": round(seconds, 2)}))
        return
    inner, _, outer = args.iterations.lower().partition("x")
    params = FlowParams(backend="torch", inner_iterations=int(inner), outer_iterations=int(outer or 10))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    gpu = device.type == "cuda"
    batches = [int(b) for b in (args.batches or ("16,64,128,256" if gpu else "4,16")).split(",")]
    fixed = args.fixed_batch if args.fixed_batch is not None else (128 if gpu else 0)
    result = {"machine": machine(), "frame_size": f"{size[0]}x{size[1]}", "params": params.hashed(),
              "device": str(device)}
    result["kernel"] = kernel(clip_pairs(args.kernel_pairs, size), params, device, batches, fixed)
    if args.e2e_pairs:
        e2e = end_to_end(args.e2e_pairs, size, device.type, args.e2e_batch or max(batches), args.iterations, args.e2e_fps,
                         args.e2e_workdir)
        result["end_to_end"] = so_far("end_to_end", e2e)
    if args.host_pairs:
        result["host"] = so_far("host", host_work(args.host_pairs, size, params, args.e2e_workdir))
    if not args.skip_epe:
        result["middlebury_epe"] = {"torch": torch_epe(device, params)}
    if not args.skip_cpu:
        result["cpu"] = cpu_comparison(clip_pairs(args.pairs, size), params, args.skip_epe)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
