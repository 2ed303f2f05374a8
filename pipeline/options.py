"""Options and value types shared by several commands."""

from __future__ import annotations

import os
import re
from contextlib import contextmanager
from pathlib import Path

import click

# eager: read before the other options, so that their checks can name what the workdir holds
workdir_option = click.option(
    "--workdir", "-w", required=True, envvar="TSNPIPE_WORKDIR", show_envvar=True, is_eager=True,
    type=click.Path(file_okay=False, path_type=str),
    help="Folder holding every stage's outputs and manifests (frames/, flow/, manifests/, ...).")


def jobs_option(default: int | None = None):
    return click.option("--jobs", "-j", type=click.IntRange(min=1), default=default or os.cpu_count() or 1,
                        show_default=True, help="Videos processed in parallel.")


backend_option = click.option(
    "--backend", type=click.Choice(["loky", "threading", "dask"]), default="loky", show_default=True,
    help="joblib backend: local worker processes (loky), threads of this process, or a Dask cluster (needs "
         "--scheduler).")
scheduler_option = click.option(
    "--scheduler", metavar="ADDRESS", default=None,
    help="Dask scheduler address, e.g. tcp://10.0.0.5:8786, for the dask backend. Workers must see the same "
         "paths as this machine.")
progress_option = click.option("--progress/--no-progress", default=True, show_default=True,
                               help="Show a progress bar with ETA on stderr.")


class SizeType(click.ParamType):
    """`256` (short side, keep aspect) or `340x256` (fixed width x height), or `none` (keep the source size)."""

    name = "SIZE"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple) or value is None:
            return value
        text = str(value).strip().lower()
        if text in ("none", "0", "source"):
            return ("source",)
        if re.fullmatch(r"\d+", text) and int(text) >= 16:
            return ("short", int(text))
        if m := re.fullmatch(r"(\d+)x(\d+)", text):
            if int(m[1]) >= 16 and int(m[2]) >= 16:
                return ("fixed", int(m[1]), int(m[2]))
        self.fail(f"{value!r} is not a size: give a short side such as 256, a fixed WxH such as 340x256, or none.",
                  param, ctx)


def check_dask(backend: str, scheduler: str | None) -> None:
    if backend == "dask" and not scheduler:
        raise click.UsageError("--backend dask needs --scheduler ADDRESS (the Dask scheduler to send videos to).")


DASK_CONNECT_S = 20.0  # how long a scheduler may take to answer


@contextmanager
def dask_client(scheduler: str):
    """A connected dask.distributed Client; a scheduler that does not answer in DASK_CONNECT_S is one sentence."""
    from distributed import Client

    from tsnpipe.stages.errors import TsnpipeError

    try:
        client = Client(scheduler, timeout=DASK_CONNECT_S)
    except (OSError, TimeoutError) as error:
        raise TsnpipeError(f"Cannot reach the Dask scheduler at {scheduler} ({error}); start it (dask scheduler) "
                           "or give its address with --scheduler.") from None
    with client:
        yield client


def dask_gpu_workers(scheduler: str) -> int:
    """How many workers of the Dask cluster at `scheduler` declare a GPU resource (`--resources GPU=1`)."""
    with dask_client(scheduler) as client:
        workers = client.scheduler_info(n_workers=-1)["workers"].values()
    return sum(1 for worker in workers if (worker.get("resources") or {}).get("GPU", 0) > 0)


class CheckpointType(click.ParamType):
    """A checkpoint file. A path that is not one is a one-line error listing the checkpoints of the runs nearby
    (the runs/ folder along the path given, and that of --workdir), since run folders carry hashed names."""

    name = "FILE"

    def convert(self, value, param, ctx):
        path = Path(value)
        if path.is_file():
            return path
        workdir = (ctx.params.get("workdir") if ctx else None) or os.environ.get("TSNPIPE_WORKDIR")
        found = nearby_checkpoints(path, Path(workdir) if workdir else None)
        if found:
            shown = ", ".join(str(p) for p in found[:8]) + (f" and {len(found) - 8} more" if len(found) > 8 else "")
            hint = f"the runs there hold {shown}; give one of them."
        else:
            hint = "no runs/ folder along that path holds one; give a best.pt or last.pt written by `tsnpipe train`."
        raise click.ClickException(f"There is no checkpoint {path}; {hint}")


def nearby_checkpoints(path: Path, workdir: Path | None = None) -> list[Path]:
    """`runs/<run>/best.pt` and `last.pt` of the first runs/ folder found walking up from `path`, and of
    workdir/runs."""
    folders = [workdir / "runs"] if workdir else []
    for parent in path.parents:
        if parent.name == "runs" and parent.is_dir():
            folders.append(parent)
            break
        if (parent / "runs").is_dir():
            folders.append(parent / "runs")
            break
    found = []
    for folder in dict.fromkeys(folders):
        found += sorted(p for name in ("best.pt", "last.pt") for p in folder.glob(f"*/{name}"))
    return list(dict.fromkeys(found))


class ShardType(click.ParamType):
    """`K/N`: shard K (0-based, as $SLURM_ARRAY_TASK_ID) of N, the videos whose id hashes to K mod N."""

    name = "K/N"

    def convert(self, value, param, ctx):
        from tsnpipe.manifests.shards import Shard

        if isinstance(value, Shard) or value is None:
            return value
        match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(value))
        if match and int(match[2]) >= 1 and int(match[1]) < int(match[2]):
            return Shard(int(match[1]), int(match[2]))
        self.fail(f"{value!r} is not a shard: give K/N with 0 <= K < N, such as 0/4 (the first of 4), or "
                  "$SLURM_ARRAY_TASK_ID/100 in a job array of 100 tasks.", param, ctx)


shard_option = click.option(
    "--shard", type=ShardType(), default=None,
    help="Only shard K of N (0 <= K < N): the videos whose id hashes to K mod N, the same slice whatever videos "
         "are added. Shards run at once on one workdir, each with its own journal and lock; the next unsharded "
         "run or `tsnpipe status` folds their rows in.")


def stage_lock(workdir: Path, stage: str, shard, command: str, videos: int | None = None):
    """The workdir lock of an unsharded run, or the shard's own lock (shared with the other shards), which
    records the `videos` of the shard for `tsnpipe status`."""
    from tsnpipe.manifests.files import WorkdirLock
    from tsnpipe.manifests.shards import ShardLock

    if shard:
        return ShardLock(Path(workdir), stage, shard, command, videos)
    return WorkdirLock(Path(workdir), command)


def shard_items(items: list, shard) -> list:
    """The items of one shard (all of them without a shard)."""
    if not shard:
        return items
    if hasattr(items, "select"):  # planning.Candidates: the videos as columns
        return items.select(shard.owns)
    return [item for item in items if shard.owns(item.video_id)]
