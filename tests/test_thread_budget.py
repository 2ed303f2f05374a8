"""Every worker process of a stage runs within its share of the cores: jobs x threads <= cores, for OpenMP/BLAS,
OpenCV's own pthreads pool and torch, read back from inside real loky workers."""

import json
import os
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
