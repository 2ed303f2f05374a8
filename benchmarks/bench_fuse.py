"""How long fusing and reporting take at UCF101 size (3,783 test videos x 101 classes, split 1).

Score files are generated with numpy (two streams that each know the label, with noise of their own),
written with write_scores, and then read, fused, searched and reported the way the CLI does.

    python benchmarks/bench_fuse.py [--videos 3783] [--classes 101] [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from tsnpipe.stages.scores.fuse import fuse_files
from tsnpipe.stages.scores.report import write_report
from tsnpipe.stages.scores.files import read_scores, write_scores


def write_stream(path: Path, video_ids, labels, classes: int, strength: float, seed: int, modality: str) -> None:
    rng = np.random.default_rng(seed)
    scores = rng.normal(size=(len(labels), classes)) + strength * np.eye(classes)[labels]
    write_scores(path, video_ids, labels, [f"Class{c:03d}" for c in range(classes)], scores,
                 {"modality": modality, "segments": 25, "crops": 10, "average": "raw"}, {"split": 1})


def timed(repeat: int, action) -> float:
    """Median seconds of `repeat` runs."""
    seconds = []
    for _ in range(repeat):
        start = time.perf_counter()
        action()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=3783)
    parser.add_argument("--classes", type=int, default=101)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        paths = {}
        for prefix, first, count in (("test", 0, args.videos), ("val", 10**6, args.videos // 4)):
            labels = np.arange(count) % args.classes
            video_ids = [f"Class{label:03d}/v_{first + i:07d}" for i, label in enumerate(labels)]
            order = np.random.default_rng(first).permutation(count)  # files in different row orders
            for seed, (modality, strength) in enumerate((("rgb", 2.5), ("flow", 3.0), ("rgbdiff", 2.0))):
                path = folder / f"{prefix}_{modality}.pkl"
                shuffled = order if modality == "flow" else np.arange(count)
                write_stream(path, [video_ids[i] for i in shuffled], labels[shuffled], args.classes, strength,
                             first + seed, modality)
                paths[prefix, modality] = path
        test2 = [paths["test", "rgb"], paths["test", "flow"]]
        test3 = test2 + [paths["test", "rgbdiff"]]
        val2 = [paths["val", "rgb"], paths["val", "flow"]]
        val3 = val2 + [paths["val", "rgbdiff"]]
        size_mb = paths["test", "rgb"].stat().st_size / 1e6
        print(f"score files: {args.videos} videos x {args.classes} classes, {size_mb:.2f} MB each")
        rows = [
            ("read_scores (one file)", timed(args.repeat, lambda: read_scores(paths["test", "rgb"]))),
            ("fuse 2 files, raw, write",
             timed(args.repeat, lambda: fuse_files(test2, (1, 1.5), output=folder / "f.pkl"))),
            ("fuse 2 files, softmax", timed(args.repeat, lambda: fuse_files(test2, (1, 1.5), softmax=True))),
            ("fuse 2 files, search 24 weights", timed(args.repeat, lambda: fuse_files(test2, validation_paths=val2))),
            ("fuse 3 files, search 288 weights", timed(max(1, args.repeat // 2),
                                                       lambda: fuse_files(test3, validation_paths=val3))),
            ("report (PNG + CSV)", timed(max(1, args.repeat // 2), lambda: write_report(folder / "f.pkl", folder))),
        ]
        for name, seconds in rows:
            print(f"{name:<34} {seconds * 1000:8.1f} ms")
        result = fuse_files(test2, (1, 1.5))
        print("accuracy of the generated streams (a sanity check, not a model result):")
        for name, accuracy in result.rows:
            print(f"  {Path(name).name:<20} top-1 {100 * accuracy['top1']:.2f}%")


if __name__ == "__main__":
    main()
