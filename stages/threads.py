"""Thread budgets inside DataLoader workers.

torch gives each DataLoader worker one intra-op thread, but OpenCV's own pthreads pool (used when a worker
decodes and resizes frames) starts with one thread per core in every worker, so `workers x cores` threads
compete for the cores beside the main process. Each worker gets one OpenCV thread instead.
"""

from __future__ import annotations


def start_loader_worker(_worker_id: int) -> None:
    """`worker_init_fn` of the DataLoaders: one OpenCV thread in this worker, as torch's one thread."""
    import cv2

    cv2.setNumThreads(1)
