"""`tsnpipe extract-frames`: every video of a folder decoded into JPEG frames at a fixed rate."""

from __future__ import annotations

import errno
import functools
import os
from pathlib import Path

import click

from tsnpipe.manifests.decide import stat_fingerprint
from tsnpipe.manifests.files import WorkdirLock
from tsnpipe.options import (SizeType, backend_option, check_dask, jobs_option, progress_option,
                             scheduler_option, workdir_option)
from tsnpipe.runner import Item, Stage, run_stage, thread_budget
from tsnpipe.stages.errors import TsnpipeError
from tsnpipe.stages.frames import (VIDEO_SUFFIXES, VIDEOS_PER_CALL, FrameParams, extract_video, extract_videos,
                                   find_videos)


def frame_params(fps: float, size: tuple, quality: int, on_decode_error: str) -> FrameParams:
    short_side = size[1] if size[0] == "short" else None
    fixed = (size[1], size[2]) if size[0] == "fixed" else None
    return FrameParams(fps=fps, short_side=short_side, size=fixed, quality=quality, on_decode_error=on_decode_error)


def frames_stage(video_dir: Path, params: FrameParams, threads: int = 1) -> Stage:
    """`threads`: each ffmpeg decoder's and encoder's share of the cores."""
    return Stage(name="frames", verb="extracted", params=params.hashed(), output_root="frames",
                 work=functools.partial(extract_video, params=params, threads=threads),
                 inputs={"video_dir": str(video_dir)}, task_videos=VIDEOS_PER_CALL,
                 batch_work=functools.partial(extract_videos, params=params, threads=threads))


def video_items(video_dir: Path) -> list[Item]:
    return [Item(video_id=vid, source=path, fingerprint=video_fingerprint(path))
            for vid, path in find_videos(video_dir)]


def video_fingerprint(path: str) -> dict:
    """The file's size and mtime; for a file that cannot be read (a dangling or looping symbolic link, no
    permission) `{"unreadable": why}`, which the runner records as a failed row while the run goes on."""
    try:
        return stat_fingerprint(path)
    except OSError as error:
        if os.path.islink(path) and error.errno == errno.ENOENT:
            why = f"{path} is a symbolic link to {os.readlink(path)}, which does not exist; fix or remove the link"
        elif error.errno == errno.ELOOP:
            why = f"{path} is a symbolic link that loops back on itself; fix or remove the link"
        else:
            why = f"cannot read {path}: {error.strerror}; fix the file or remove it"
        return {"unreadable": why}


def no_videos_message(video_dir: Path) -> str:
    """Why a folder gave no videos, and what to point extract-frames at instead."""
    kinds = ", ".join(sorted(VIDEO_SUFFIXES))
    found = sum(1 for p in video_dir.rglob("*") if p.is_file())
    what = f"holds {found:,} file{'s' * (found != 1)} but no video" if found else "is empty"
    return (f"{video_dir} {what} ({kinds}); point extract-frames at the folder holding the class folders of "
            "videos, e.g. UCF-101/ with ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi inside.")


def describe(params: FrameParams) -> str:
    size = (f"{params.size[0]}x{params.size[1]}" if params.size else
            f"short side {params.short_side}" if params.short_side else "source size")
    return f"{params.fps:g} fps, {size}, JPEG q{params.quality}, decode errors: {params.on_decode_error}"


@click.command("extract-frames")
@click.argument("video_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@workdir_option
@click.option("--fps", type=click.FloatRange(min=0.1, max=240), default=10.0, show_default=True,
              help="Frames per second to sample. Frame img_{k+1:05d}.jpg is the picture shown at time k/fps.")
@click.option("--size", type=SizeType(), default="256", show_default=True,
              help="Resize: a short side (256), a fixed WxH (340x256), or none.")
@click.option("--quality", type=click.IntRange(2, 31), default=2, show_default=True,
              help="JPEG quality as ffmpeg's qscale: 2 is best (~14 KB a 340x256 frame), 31 worst.")
@click.option("--on-decode-error", type=click.Choice(["fail", "keep"]), default="fail", show_default=True,
              help="A video whose decoder reports errors: a failed row (fail) or keep the frames that decode.")
@jobs_option()
@backend_option
@scheduler_option
@progress_option
def extract_frames(video_dir, workdir, fps, size, quality, on_decode_error, jobs, backend, scheduler, progress):
    """Decode every video under VIDEO_DIR into W/frames/<video_id>/img_00001.jpg, ... with ffmpeg.

    The video id is the path below VIDEO_DIR without its extension (UCF101: Class/v_Class_g01_c01). Reruns
    only touch videos that are new, changed, failed before, or were extracted with other options; a run
    that was killed picks up where it stopped. Bad files become failed rows in W/manifests/frames.parquet
    and the run goes on; the exit code is 1 when any video failed.
    """
    check_dask(backend, scheduler)
    video_dir = video_dir.absolute()  # recorded for `status` and `--pairs source`, which may run from elsewhere
    params = frame_params(fps, size, quality, on_decode_error)
    items = video_items(video_dir)
    if not items:
        raise TsnpipeError(no_videos_message(video_dir))
    click.echo(f"extract-frames: {len(items):,} videos in {video_dir}; {describe(params)}; {jobs} jobs ({backend})")
    with WorkdirLock(Path(workdir), "tsnpipe extract-frames"):
        summary = run_stage(Path(workdir), frames_stage(video_dir, params, thread_budget(jobs)), items, jobs=jobs,
                            backend=backend, scheduler=scheduler, progress=progress)
    click.echo(summary.line())
    if summary.failed:
        raise SystemExit(1)
