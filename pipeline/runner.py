"""Run one per-video stage over many videos: ask the manifest what needs work, fan out, record, summarise.

The stage gives a plain function `work(source, out_dir) -> facts` that writes one video's outputs into
`out_dir`. The runner calls it on a temporary sibling of the final folder, renames the folder into place,
and only then records the row as done. Workers return rows and never raise; only this process writes
the manifest, one durable journal line per finished video.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from tsnpipe.manifests.decide import content_hash, params_hash
from tsnpipe.manifests.files import (ManifestError, atomic_write_bytes, disk_full_reason, replace_dir, sweep_temps,
                                     temp_sibling)
from tsnpipe.manifests.shards import Shard, ShardManifest, owned_temp
from tsnpipe.manifests.table import Manifest, manifest_path
from tsnpipe.options import dask_client
from tsnpipe.planning import Candidates, Item, plan

__all__ = ["Candidates", "Item", "Stage", "Summary", "run_stage", "run_info_path", "hash_files", "plan_stage"]


@dataclass
class Stage:
    name: str  # manifest name, e.g. "frames"
    verb: str  # for the summary, e.g. "extracted"
    params: dict  # exactly what the work reads, with the stage version
    output_root: str  # folder under the workdir holding one output folder per video
    work: Callable[[str, Path], dict]  # picklable: module-level function or functools.partial
    inputs: dict = field(default_factory=dict)  # where the items came from, recorded for `tsnpipe status`
    unit: str = "video"
    hash_content: bool = True  # file inputs get a content hash, so a touched-but-same file is not redone
    # optional: many videos in one call, yielding (index, facts or exception) as each finishes
    batch_work: Callable[[list[tuple[str, Path]]], Iterator[tuple[int, dict | Exception]]] | None = None
    # with batch_work: how many videos one call takes in a worker task (None: all of them, in this process)
    task_videos: int | None = None
    # what each task asks of a Dask worker, e.g. {"GPU": 1}: only workers declaring it run the videos
    dask_resources: dict | None = None

    @property
    def params_hash(self) -> str:
        return params_hash(self.params)


@dataclass
class Summary:
    stage: Stage
    workdir: Path
    done: int = 0
    up_to_date: int = 0
    failed: list = field(default_factory=list)
    reasons: dict = field(default_factory=dict)
    seconds: float = 0.0
    threads: str = ""  # the thread budget the workers ran under, e.g. "2 jobs x 1 thread"

    def line(self) -> str:
        text = f"{self.done:,} {self.stage.verb}, {self.up_to_date:,} up to date, {len(self.failed):,} failed"
        if self.failed:
            text += f" (see {manifest_path(self.workdir, self.stage.name)})"
        text += f" in {self.seconds:.1f} s"
        if self.threads:
            text += f" ({self.threads})"
        if self.reasons:
            text += "; why: " + ", ".join(f"{count:,} {reason}" for reason, count in self.reasons.items())
        return text


def run_info_path(workdir: Path, stage_name: str) -> Path:
    return manifest_path(workdir, stage_name).with_suffix(".run.json")


def hash_files(paths: list[str], jobs: int = 1) -> list[str]:
    """Content hashes of many files, `jobs` at a time (hashlib releases the GIL, so threads read and hash in
    parallel without starting processes)."""
    if jobs <= 1 or len(paths) < 2:
        return [content_hash(Path(path)) for path in paths]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(jobs) as pool:
        return list(pool.map(lambda path: content_hash(Path(path)), paths, chunksize=64))


def bad_name(video_id: str) -> str | None:
    """Why a video id cannot be an output folder or a list line (a newline or other control character)."""
    bad = sorted({ch for ch in video_id if ord(ch) < 32 or ord(ch) == 127})
    if bad:
        shown = ", ".join(repr(ch) for ch in bad)
        return (f"the file name holds a control character ({shown}) that breaks list files and shells; "
                "rename the video without it")
    return None


def settle(item: Item, workdir: Path, output_root: str, phash: str, tmp: Path, started: float,
           outcome: dict | Exception, fingerprint: dict) -> dict:
    """Rename a finished temp folder into place and return the done row, or clear it and return the failed row."""
    final = workdir / output_root / item.video_id
    row = {"video_id": item.video_id, "source": item.source, "params_hash": phash,
           "started_at": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started))}
    try:
        if isinstance(outcome, Exception):
            raise outcome
        replace_dir(tmp, final)
        row.update(status="done", error=None, output=f"{output_root}/{item.video_id}", **outcome)
    except Exception as exc:  # a failed video is a row, never a crashed run
        shutil.rmtree(tmp, ignore_errors=True)
        message = " ".join(str(exc).split()) or type(exc).__name__
        row.update(status="failed", error=message, output=None)
    row["fingerprint"] = json.dumps(fingerprint, sort_keys=True)
    row["seconds"] = round(time.time() - started, 3)
    return row


def prepared(item: Item, workdir: Path, output_root: str, hash_content: bool) -> tuple[Path, dict]:
    """The item's temp output folder (its parent made) and its fingerprint with the content hash; raises for a
    video that cannot be worked on."""
    tmp = temp_sibling(workdir / output_root / item.video_id)
    fingerprint = dict(item.fingerprint)
    if reason := bad_name(item.video_id) or fingerprint.get("unreadable"):
        raise ValueError(reason)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    if hash_content and "hash" not in fingerprint:
        fingerprint["hash"] = content_hash(Path(item.source))
    return tmp, fingerprint


def run_item(work: Callable, item: Item, workdir: Path, output_root: str, phash: str, hash_content: bool) -> dict:
    """Process one video into a temp folder, rename it into place, and return its row. Never raises."""
    tmp = temp_sibling(workdir / output_root / item.video_id)
    started = time.time()
    fingerprint = dict(item.fingerprint)
    try:
        tmp, fingerprint = prepared(item, workdir, output_root, hash_content)
        outcome = work(item.source, tmp)
    except Exception as exc:
        outcome = exc
    return settle(item, workdir, output_root, phash, tmp, started, outcome, fingerprint)


def run_group(batch_work: Callable, items: list[Item], workdir: Path, output_root: str, phash: str,
              hash_content: bool) -> list[dict]:
    """Several videos through one `batch_work` call (one worker task), each renamed into place; their rows, as
    run_item gives them, each timed at an even share of the call. Never raises."""
    started = time.time()
    rows, ready = [], []
    for item in items:
        try:
            ready.append((item, *prepared(item, workdir, output_root, hash_content)))
        except Exception as exc:
            rows.append(settle(item, workdir, output_root, phash, temp_sibling(workdir / output_root / item.video_id),
                               started, exc, dict(item.fingerprint)))
    outcomes: dict = {}
    try:
        for index, outcome in batch_work([(item.source, tmp) for item, tmp, _ in ready]):
            outcomes[index] = outcome
    except Exception as exc:  # the call itself broke: every video it had not finished fails with its reason
        outcomes = {index: outcomes.get(index, exc) for index in range(len(ready))}
    share = round((time.time() - started) / max(len(items), 1), 3)
    for index, (item, tmp, fingerprint) in enumerate(ready):
        outcome = outcomes.get(index, RuntimeError("the batch returned no result for this video"))
        rows.append({**settle(item, workdir, output_root, phash, tmp, started, outcome, fingerprint), "seconds": share})
    return rows


# Read by OpenMP, MKL, OpenBLAS, numexpr, Accelerate and OpenCV when they start; torch's intra-op pool follows OMP.
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS",
              "VECLIB_MAXIMUM_THREADS", "OPENCV_FOR_THREADS_NUM")


def thread_budget(jobs: int) -> int:
    """Threads each of `jobs` workers may use so that jobs x threads <= cores."""
    return max(1, (os.cpu_count() or 1) // max(jobs, 1))


def start_worker(threads: int) -> None:
    """A worker process's initializer: its thread budget, set before its first task imports anything heavy
    (OpenCV's own pthreads pool ignores joblib's limits, hence OPENCV_FOR_THREADS_NUM), and applied at once to
    OpenCV and torch when they are loaded already."""
    import sys

    for name in THREAD_ENV:
        os.environ[name] = str(threads)
    if "cv2" in sys.modules:
        sys.modules["cv2"].setNumThreads(threads)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)


def task_size(todo: int, jobs: int, most: int) -> int:
    """Videos a task: up to `most`, but at least two tasks a worker, so the last ones end close together."""
    return max(1, min(most, -(-todo // (2 * jobs))))


def _batched_rows(stage: Stage, todo: list[Item], workdir: Path):
    """All videos through one `batch_work` call (e.g. a GPU drawing pairs from several videos at once)."""
    started = time.time()
    tmps = [temp_sibling(workdir / stage.output_root / item.video_id) for item in todo]
    for tmp in tmps:
        tmp.parent.mkdir(parents=True, exist_ok=True)
    for index, outcome in stage.batch_work([(item.source, tmp) for item, tmp in zip(todo, tmps)]):
        item = todo[index]
        yield settle(item, workdir, stage.output_root, stage.params_hash, tmps[index], started, outcome,
                     dict(item.fingerprint))
        started = time.time()


def _parallel_rows(stage: Stage, todo: list[Item], workdir: Path, jobs: int, backend: str, scheduler: str | None):
    from joblib import Parallel, delayed, parallel_config

    args = (workdir, stage.output_root, stage.params_hash, stage.hash_content)
    grouped = stage.batch_work is not None and stage.task_videos is not None
    if grouped:
        size = task_size(len(todo), jobs, stage.task_videos)
        calls = (delayed(run_group)(stage.batch_work, todo[at:at + size], *args) for at in range(0, len(todo), size))
    else:
        calls = (delayed(run_item)(stage.work, item, *args) for item in todo)
    if backend == "dask":
        resources = {"resources": stage.dask_resources} if stage.dask_resources else {}
        with dask_client(scheduler), parallel_config(backend="dask", **resources):
            yield from _rows(Parallel(n_jobs=jobs, return_as="generator_unordered")(calls), grouped)
        return
    if jobs == 1 and stage.batch_work is not None and not grouped:
        yield from _batched_rows(stage, todo, workdir)
        return
    if jobs == 1:  # in-process: simplest to debug and no pickling
        for call, call_args, call_kwargs in calls:
            result = call(*call_args, **call_kwargs)
            yield from result if grouped else [result]
        return
    workers = {"initializer": start_worker, "initargs": (thread_budget(jobs),)} if backend == "loky" else {}
    yield from _rows(Parallel(n_jobs=jobs, backend=backend, return_as="generator_unordered", batch_size=1,
                              **workers)(calls), grouped)


def _rows(results: Iterator, grouped: bool) -> Iterator[dict]:
    """Rows as the tasks finish; closing this closes joblib's generator, which cancels the tasks not started."""
    try:
        for result in results:
            yield from result if grouped else [result]
    finally:
        results.close()


def output_folders(workdir: Path, stage: Stage, video_ids) -> set[Path]:
    """The folders that hold the stage's per-video outputs (and so their temp siblings)."""
    root = workdir / stage.output_root
    return {root / parent for parent in {video_id.rpartition("/")[0] for video_id in video_ids}}


def plan_stage(workdir: Path, stage: Stage, items: "Candidates | list[Item]", manifest: Manifest, jobs: int = 1,
               output: str | None = None):
    """The stage's plan (planning.plan), touched inputs content-hashed `jobs` files at a time."""
    cands = items if isinstance(items, Candidates) else Candidates.of_items(list(items))
    return plan(workdir, stage, cands, manifest, lambda paths: hash_files(paths, jobs), output=output)


def disk_full_error(workdir: Path, stage: Stage, row: dict, summary: "Summary") -> ManifestError:
    return ManifestError(
        f"The disk holding {workdir / stage.output_root} is full ({disk_full_reason(row['error'])}, at "
        f"{row['video_id']}); "
        f"the {summary.done:,} videos finished in this run and all before are kept: free some space and run the "
        "command again.")


def run_stage(workdir: Path, stage: Stage, items: "Candidates | list[Item]", jobs: int = 1, backend: str = "loky",
              scheduler: str | None = None, progress: bool = True, compact_every_s: float = 30.0,
              shard: Shard | None = None) -> Summary:
    """Bring every item's row up to date; the caller holds the workdir lock (or, given `shard`, the items are
    that shard's, the caller holds its ShardLock, and rows go to the shard's journal).

    The table is compacted when the journal has grown by a quarter of the rows (and at least
    `compact_every_s` passed), so a long run rewrites it a bounded number of times, and a run that changed
    nothing does not rewrite it. The first video that fails for a full disk stops the run with one sentence
    (ManifestError); it is not recorded as failed, so the rerun does it. A run that stops early removes the
    temp folders of the videos it had in flight (and the next run sweeps what a kill -9 left)."""
    from tsnpipe.stages.progress import progress_bar

    workdir = Path(workdir)
    started = time.time()
    run_info = {"params": stage.params, "params_hash": stage.params_hash, "inputs": stage.inputs}
    atomic_write_bytes(run_info_path(workdir, stage.name), json.dumps(run_info, indent=2, default=str).encode())
    cands = items if isinstance(items, Candidates) else Candidates.of_items(list(items))
    own_temps = owned_temp(workdir / stage.output_root, shard) if shard else None  # never another shard's
    sweep_temps(workdir / stage.output_root, output_folders(workdir, stage, cands.ids), only=own_temps)
    manifest = ShardManifest(workdir, stage.name, shard) if shard else Manifest(workdir, stage.name)
    planned = plan_stage(workdir, stage, cands, manifest, jobs=jobs if backend != "dask" else 1)
    manifest.record_many(planned.refreshed)  # touched inputs whose content hash proved them unchanged
    todo = [item for item, _ in planned.todo]
    summary = Summary(stage=stage, workdir=workdir, up_to_date=planned.up_to_date, reasons=planned.reasons())
    if todo and jobs > 1 and backend != "dask":
        threads = thread_budget(jobs)
        summary.threads = f"{jobs} jobs x {threads} thread{'s' * (threads != 1)}"
    weights = {item.video_id: item.weight for item in todo}
    bar = progress_bar(total=sum(weights.values()), unit=stage.unit, desc=stage.name, enabled=progress and bool(todo),
                       smoothing=0.1, unit_scale=stage.unit == "B")
    last_compact = time.time()
    rows, finished = _parallel_rows(stage, todo, workdir, jobs, backend, scheduler), False
    try:
        for row in rows:
            if row["status"] != "done" and disk_full_reason(row["error"] or ""):  # the disk's fault, not the video's
                raise disk_full_error(workdir, stage, row, summary)
            manifest.record(row)
            bar.update(weights[row["video_id"]])
            if row["status"] == "done":
                summary.done += 1
            else:
                summary.failed.append(row)
                bar.write(f"failed: {row['video_id']}: {row['error']}")
            if (manifest.journal_rows > max(1000, len(cands) // 4)
                    and time.time() - last_compact > compact_every_s):
                manifest.compact()
                last_compact = time.time()
        finished = True
    finally:
        if hasattr(rows, "close"):
            rows.close()  # stops handing out videos (joblib cancels what has not started, kills what has)
        bar.close()
        if not finished:  # Ctrl-C, SIGTERM, a full disk: the videos in flight leave no half-written folder
            sweep_temps(workdir / stage.output_root, output_folders(workdir, stage, [item.video_id for item in todo]),
                        only=own_temps)
    manifest.compact_if_changed()
    summary.seconds = time.time() - started
    return summary
