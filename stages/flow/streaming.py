"""Many videos through the torch TV-L1: frames streamed in chunks, one solver per device, CPU threads around.

Contract: memory is bounded whatever the videos' lengths (a video is read `chunk` frames at a time, at
most `lookahead` chunks are decoded ahead, at most `in_flight` pairs a device are being solved, and the
flow waiting to be encoded is bounded too); a failed video is reported once none of its pairs is
still being solved or written; every video is yielded exactly once, as soon as all its images are on disk.

Threads: the caller's thread hands flow to the encoder pool and yields finished videos; one thread per
device runs a RefillSolver that draws pairs from the shared feed; the pool decodes chunks of JPEG frames
and quantizes and encodes flow images (OpenCV and numpy release the GIL).
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from tsnpipe.stages.errors import TsnpipeError
from tsnpipe.stages.flow.images import list_frames, read_grey_frames, write_flow_pair
from tsnpipe.stages.flow.params import FlowParams


@dataclass
class _Video:
    index: int
    out_dir: Path
    paths: list[Path]
    pairs: int
    shape: tuple[int, int] | None = None
    fed: int = 0  # pairs handed to the solvers
    returned: int = 0  # pairs whose flow came back
    closed: bool = False  # no more pairs will be fed
    error: Exception | None = None
    writes: list[Future] = field(default_factory=list)


class _Feed:
    """The pairs of every video, in order, decoded ahead on the pool; safe to draw from several threads."""

    def __init__(self, jobs, pool: ThreadPoolExecutor, chunk: int, lookahead: int):
        self.lock = threading.Lock()
        self.videos: dict[int, _Video] = {}
        self.closed: list[_Video] = []  # closed since the consumer last looked
        self.pool, self.chunk, self.lookahead = pool, chunk, lookahead
        self.plan = self._plan(jobs)
        self.ahead: deque = deque()
        self.current: Iterator = iter(())
        self.aborted = False

    def _close(self, video: _Video, error: Exception | None = None) -> None:
        video.error = video.error or error
        video.closed = True
        self.closed.append(video)

    def _plan(self, jobs) -> Iterator[tuple[_Video, int, Future, bool]]:
        for index, (frames_dir, out_dir) in enumerate(jobs):
            try:
                paths = list_frames(frames_dir)
                out = Path(out_dir)
                out.mkdir(parents=True, exist_ok=True)
            except Exception as exc:  # missing frames fail this video only
                video = self.videos[index] = _Video(index, Path(out_dir), [], 0)
                self._close(video, exc)
                continue
            video = self.videos[index] = _Video(index, out, paths, len(paths) - 1)
            if video.pairs < 1:
                self._close(video)
                continue
            for start in range(0, video.pairs, self.chunk):
                future = self.pool.submit(read_grey_frames, paths[start : start + self.chunk + 1])
                yield video, start, future, start + self.chunk >= video.pairs

    def next_pair(self):
        """(key, first, second) with key (video index, pair index), or None when there are no more."""
        with self.lock:
            while not self.aborted:
                pair = next(self.current, None)
                if pair is not None:
                    return pair
                while len(self.ahead) < self.lookahead:
                    planned = next(self.plan, None)
                    if planned is None:
                        break
                    self.ahead.append(planned)
                if not self.ahead:
                    return None
                video, start, future, last = self.ahead.popleft()
                if video.closed:
                    continue
                try:
                    frames = future.result()
                    if video.shape is None:
                        video.shape = frames.shape[1:]
                    elif frames.shape[1:] != video.shape:
                        first = video.paths[start]
                        raise TsnpipeError(
                            f"The frame {first} is {frames.shape[2]}x{frames.shape[1]} but {video.paths[0].name} is "
                            f"{video.shape[1]}x{video.shape[0]}; rerun `tsnpipe extract-frames` for this video.")
                except Exception as exc:  # an undecodable frame fails this video only
                    self._close(video, exc)
                    continue
                video.fed += len(frames) - 1
                if last:
                    self._close(video)
                self.current = (((video.index, start + k), frames[k], frames[k + 1]) for k in range(len(frames) - 1))
            return None

    def abort(self, error: Exception) -> None:
        """Stop handing out pairs; every video not yet closed fails with `error`."""
        with self.lock:
            self.aborted = True
            for video in self.videos.values():
                if not video.closed:
                    self._close(video, error)
            for video, *_ in self.ahead:
                if not video.closed:
                    self._close(video, error)

    def take_closed(self) -> list[_Video]:
        with self.lock:
            closed, self.closed = self.closed, []
            return closed


def _solve_on(device, feed: _Feed, out: queue.Queue, params: FlowParams, batch: int, step: Callable,
              in_flight: int | None) -> None:
    """One device's thread: solve pairs from the feed, send their flow (H x W x 2 float32) to the caller."""
    import torch

    from tsnpipe.stages.flow.refill import RefillSolver

    solver = None
    try:
        if device.type == "cuda":
            torch.cuda.set_device(device)
        with torch.inference_mode():
            solver = RefillSolver(params, device, batch, step, in_flight)
            for finished in solver.solve(iter(feed.next_pair, None)):
                if feed.aborted:  # the caller stopped (a full disk, Ctrl-C): leave the pairs in flight
                    break
                flows = torch.stack([flow for _, flow in finished]).permute(0, 2, 3, 1).cpu().numpy()
                out.put(("flow", [(key, flow) for (key, _), flow in zip(finished, flows)]))
    except Exception as exc:  # a device failure (out of memory, driver error) fails the videos in flight
        out.put(("stopped", exc))
        return
    out.put(("stopped", None))


def stream_flow_videos(jobs, params: FlowParams, devices: list, batch: int, step: Callable, *, threads: int,
                       chunk: int | None = None, lookahead: int | None = None,
                       in_flight: int | None = None) -> Iterator[tuple[int, dict | Exception]]:
    """Flow every video of `jobs` ((frames_dir, out_dir) pairs) on `devices`; yield (index, facts or error)."""
    from tsnpipe.stages.flow.driver import facts

    chunk = chunk or max(16, batch)
    lookahead = lookahead or 2 * len(devices) + 2
    pending_writes = threading.BoundedSemaphore(max(64, 4 * batch * len(devices)))
    with ThreadPoolExecutor(threads) as pool:
        feed = _Feed(jobs, pool, chunk, lookahead)
        out: queue.Queue = queue.Queue(maxsize=4 * len(devices))
        workers = [threading.Thread(target=_solve_on, args=(device, feed, out, params, batch, step, in_flight),
                                    name=f"tvl1-{device}", daemon=True) for device in devices]
        for worker in workers:
            worker.start()
        try:
            yield from _collect(feed, workers, out, pool, pending_writes, params, facts, len(jobs))
        finally:  # also when the caller closes this generator early: no solver may outlive it
            _stop(feed, workers, out)


def _stop(feed: _Feed, workers: list[threading.Thread], out: queue.Queue) -> None:
    """Abort the feed and wait for the solver threads, emptying their queue so none blocks on it. A thread
    left running in torch while the interpreter exits aborts the process."""
    if any(worker.is_alive() for worker in workers):
        feed.abort(TsnpipeError("extract-flow stopped before this video was done; rerun extract-flow."))
    while any(worker.is_alive() for worker in workers):
        try:
            out.get(timeout=0.05)
        except queue.Empty:
            pass
    for worker in workers:
        worker.join()


def _collect(feed: _Feed, workers, out: queue.Queue, pool: ThreadPoolExecutor, pending_writes, params: FlowParams,
             facts, count: int) -> Iterator[tuple[int, dict | Exception]]:
    """The caller's side of `stream_flow_videos`: write the flow that comes back, yield finished videos."""
    running, error, done, closed = len(workers), None, set(), []
    while True:
        try:
            kind, payload = out.get(timeout=0.05)
        except queue.Empty:
            kind, payload = None, None
        if kind == "stopped":
            running -= 1
            if payload is not None and error is None:
                error = payload
                feed.abort(payload)
        elif kind == "flow":
            for (index, k), flow in payload:
                video = feed.videos[index]
                video.returned += 1
                if video.error is None:
                    pending_writes.acquire()
                    write = pool.submit(write_flow_pair, video.out_dir, k, flow, params)
                    write.add_done_callback(lambda _: pending_writes.release())
                    video.writes.append(write)
        closed += feed.take_closed()
        closed = yield from _finished(feed, closed, done, facts)
        if running == 0:
            if error is None:
                error = TsnpipeError("The flow workers stopped before every video was done; rerun extract-flow.")
            feed.abort(error)
            for video in feed.videos.values():
                if video.returned < video.fed and video.error is None:
                    video.error = error  # pairs handed out that never came back: never "done" without them
                video.returned = video.fed  # nothing more will come back
            yield from _finished(feed, closed + feed.take_closed(), done, facts)
            for index in range(count):
                if index not in done and index not in feed.videos:
                    done.add(index)
                    yield index, error
            return


def _finished(feed: _Feed, closed: list[_Video], done: set, facts):
    """Yield the closed videos whose pairs have all come back, once their writes are done; return the others."""
    with feed.lock:
        ready = [video for video in closed if video.returned >= video.fed]
        still = [video for video in closed if video.returned < video.fed]
    for video in ready:
        if video.index in done:
            continue
        done.add(video.index)
        try:
            clipped = sum(write.result() for write in video.writes)
        except Exception as exc:  # a failed write fails this video only; the runner records it
            video.error = video.error or exc
        if video.error is not None:
            yield video.index, video.error
        else:
            height, width = video.shape or (0, 0)
            yield video.index, facts(video.pairs, clipped, height, width)
        video.paths, video.writes = [], []
    return still
