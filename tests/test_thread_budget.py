"""Every worker process of a stage runs within its share of the cores: jobs x threads <= cores, for OpenMP/BLAS,
OpenCV's own pthreads pool and torch, read back from inside real loky workers."""

import json
import os
import subprocess
import sys
from pathlib import Path

from tsnpipe.runner import Item, Stage, run_stage, thread_budget


def report_threads(source: str, out_dir: Path) -> dict:
    """The stage's work: record the thread settings this worker process sees."""
    import cv2
    import torch

    out_dir.mkdir(parents=True)
    seen = {"cv2": cv2.getNumThreads(), "torch": torch.get_num_threads(), "omp": os.environ.get("OMP_NUM_THREADS"),
            "pid": os.getpid()}
    (out_dir / "threads.json").write_text(json.dumps(seen))
    return {}


def test_workers_read_back_their_share_of_the_cores(tmp_path):
    jobs = 2
    items = [Item(video_id=f"v{i}", source=f"v{i}", fingerprint={"size": i}) for i in range(4)]
    stage = Stage(name="probe", verb="probed", params={"v": 1}, output_root="probe", work=report_threads,
                  hash_content=False)
    summary = run_stage(tmp_path, stage, items, jobs=jobs, progress=False)
    threads = thread_budget(jobs)
    assert summary.done == 4 and f"({jobs} jobs x {threads} thread" in summary.line()
    seen = [json.loads((tmp_path / "probe" / item.video_id / "threads.json").read_text()) for item in items]
    assert all(s["pid"] != os.getpid() for s in seen)  # read in worker processes, not here
    assert {(s["cv2"], s["torch"], s["omp"]) for s in seen} == {(threads, threads, str(threads))}
    assert jobs * threads <= (os.cpu_count() or 1) or threads == 1


class ThreadsSeen:
    """A dataset whose items are the thread settings of the process that loads them."""

    def __len__(self):
        return 2

    def __getitem__(self, index):
        import cv2
        import torch

        return torch.tensor([cv2.getNumThreads(), torch.get_num_threads(), os.getpid()])


def test_dataloader_workers_run_one_opencv_and_one_torch_thread():
    from tsnpipe.stages.train.data import make_loader

    loader = make_loader(ThreadsSeen(), 1, shuffle=False, workers=1, shard=False, pin=False)
    seen = [tuple(batch[0].tolist()) for batch in loader]
    assert len(seen) == 2 and all(pid != os.getpid() for _, _, pid in seen)
    assert {(cv, torch_threads) for cv, torch_threads, _ in seen} == {(1, 1)}


AFTER_OPENCV_RAN = """import sys
import cv2
import numpy as np
import torch

cv2.setNumThreads(2)
for _ in range(20):  # OpenCV's thread pool started in this process, as after decoding or TV-L1 here
    cv2.resize(np.zeros((2000, 2000, 3), np.uint8), (1000, 1000))


class Resized:
    def __len__(self):
        return 2

    def __getitem__(self, index):
        cv2.resize(np.zeros((2000, 2000, 3), np.uint8), (1000, 1000))
        return torch.tensor([cv2.getNumThreads()])


from tsnpipe.stages.train.data import make_loader

loader = make_loader(Resized(), 1, shuffle=False, workers=1, shard=False, pin=False)
print([int(batch[0]) for batch in loader], cv2.getNumThreads())
"""


def test_loader_workers_forked_after_opencv_ran_here_start_with_one_thread_and_do_not_hang():
    """A worker forked from a process whose OpenCV pool was running: changing OpenCV's threads inside it waits
    for the pool's threads, which stayed behind, for ever; it inherits one thread instead."""
    done = subprocess.run([sys.executable, "-c", AFTER_OPENCV_RAN], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[0] == "[1, 1] 2"  # one thread in the worker, this process's two kept
