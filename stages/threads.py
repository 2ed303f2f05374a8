"""Thread budgets inside DataLoader workers.

torch gives each DataLoader worker one intra-op thread, but OpenCV's own pthreads pool (used when a worker
decodes and resizes frames) starts with one thread per core in every worker, so `workers x cores` threads
compete for the cores beside the main process. Each worker gets one OpenCV thread instead, set in this process
while the workers are forked, so they inherit it: a forked worker must not change OpenCV's threads itself,
since the pool's threads stayed behind in this process and the change would wait for them for ever.
"""

from __future__ import annotations

from contextlib import contextmanager

from torch.utils.data import DataLoader


@contextmanager
def one_opencv_thread():
    """OpenCV at one thread in this process for the time of the block, then as it was."""
    import cv2

    before = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        yield
    finally:
        cv2.setNumThreads(before)


class BudgetedLoader(DataLoader):
    """A DataLoader whose worker processes run one OpenCV thread (and torch's one)."""

    def __iter__(self):
        if self.num_workers == 0:
            return super().__iter__()
        with one_opencv_thread():  # the workers are forked here, on the first iteration
            return super().__iter__()
