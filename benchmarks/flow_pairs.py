"""How much of the flow the +-bound clips, with `extract-flow --pairs frames` and `--pairs source`.

Every bundled clip is decoded as `extract-frames` does (10 fps, short side 256 by default), then flow is
computed by the flow stage itself (OpenCV TV-L1 with the FlowParams defaults) once per pairing. Printed as
one JSON object: per clip and in total, the pairs, the clipped fraction (values with |v| > bound, over both
components) and the 99th percentile of |v| in pixels read back from the written images.
Usage: python benchmarks/flow_pairs.py [--fps 10] [--short-side 256] [--start 0] [--clips 7] [--inner-iterations 30]
(30 inner iterations are OpenCV's own default and dense_flow's; the clipped fraction barely depends on them.)
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from tsnpipe.stages.flow import FlowParams
from tsnpipe.stages.flow.driver import flow_video
from tsnpipe.stages.flow.images import dequantize, read_grey
from tsnpipe.stages.flow.source_pairs import source_flow_video
from tsnpipe.stages.frames import FrameParams, extract_video

REPO = Path(__file__).resolve().parents[1]
CLIPS = sorted((REPO / "pipeline" / "samples" / "videos").glob("*/*.avi"))


def percentile_motion(folder: Path, pairs: int, bound: float) -> float:
    values = [np.abs(dequantize(read_grey(folder / f"flow_{axis}_{k:05d}.jpg"), bound) - dequantize(np.uint8(128), bound))
              for k in range(1, pairs + 1) for axis in "xy"]
    return float(np.percentile(np.stack(values), 99)) if values else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fps", type=float, default=10.0)
    parser.add_argument("--short-side", type=int, default=256)
    parser.add_argument("--clips", type=int, default=len(CLIPS))
    parser.add_argument("--start", type=int, default=0, help="skip the first clips (to split the run over processes)")
    parser.add_argument("--inner-iterations", type=int, default=FlowParams.inner_iterations)
    args = parser.parse_args()
    cv2.setNumThreads(1)
    frames = FrameParams(fps=args.fps, short_side=args.short_side)
    results = {"machine": platform.processor() or platform.machine(), "fps": args.fps,
               "short_side": args.short_side, "inner_iterations": args.inner_iterations, "clips": {}, "total": {}}
    totals = {pairs: {"pairs": 0, "clipped_values": 0.0, "values": 0, "seconds": 0.0} for pairs in ("frames", "source")}
    with tempfile.TemporaryDirectory() as temp:
        for clip in CLIPS[args.start: args.start + args.clips]:
            name = f"{clip.parent.name}/{clip.stem}"
            frames_dir = Path(temp) / "frames" / name
            facts = extract_video(clip, frames_dir, frames)
            entry = {"frames": facts["frames"], "source_fps": facts["src_fps"]}
            for pairs in ("frames", "source"):
                params = FlowParams(pairs=pairs, inner_iterations=args.inner_iterations)
                out = Path(temp) / pairs / name
                start = time.perf_counter()
                if pairs == "source":
                    done = source_flow_video(clip, frames_dir, out, params, frames)
                else:
                    done = flow_video(frames_dir, out, params)
                seconds = time.perf_counter() - start
                values = 2 * done["pairs"] * facts["width"] * facts["height"]
                entry[pairs] = {"pairs": done["pairs"], "clipped_fraction": round(done["clipped_fraction"], 6),
                                "p99_abs_flow_px": round(percentile_motion(out, done["pairs"], params.bound), 3),
                                "seconds": round(seconds, 1)}
                total = totals[pairs]
                total["pairs"] += done["pairs"]
                total["clipped_values"] += done["clipped_fraction"] * values
                total["values"] += values
                total["seconds"] += seconds
            results["clips"][name] = entry
            print(json.dumps({name: entry}), flush=True)
    for pairs, total in totals.items():
        results["total"][pairs] = {"pairs": total["pairs"], "seconds": round(total["seconds"], 1),
                                   "clipped_fraction": round(total["clipped_values"] / max(total["values"], 1), 6)}
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
