"""`tsnpipe extract-frames`: every video of a folder decoded into JPEG frames at a fixed rate."""

from __future__ import annotations

import errno
import functools
import os
from pathlib import Path

import click

from tsnpipe.manifests.decide import stat_fingerprint
from tsnpipe.options import (SizeType, backend_option, check_dask, jobs_option, progress_option, scheduler_option,
                             shard_items, shard_option, stage_lock, workdir_option)
from tsnpipe.planning import Candidates
from tsnpipe.runner import Stage, run_stage, thread_budget
from tsnpipe.stages.errors import TsnpipeError
from tsnpipe.stages.frames import (VIDEO_SUFFIXES, VIDEOS_PER_CALL, FrameParams, extract_video, extract_videos,
                                   find_videos)


def frame_params(fps: float, size: tuple, quality: int, on_decode_error: str,
                 max_frames: int | None = None) -> FrameParams:
    short_side = size[1] if size[0] == "short" else None
    fixed = (size[1], size[2]) if size[0] == "fixed" else None
    return FrameParams(fps=fps, short_side=short_side, size=fixed, quality=quality, on_decode_error=on_decode_error,
                       max_frames=max_frames)


def frames_stage(video_dir: Path, params: FrameParams, threads: int = 1) -> Stage:
    """`threads`: each ffmpeg decoder's and encoder's share of the cores."""
    return Stage(name="frames", verb="extracted", params=params.hashed(), output_root="frames",
                 work=functools.partial(extract_video, params=params, threads=threads),
                 inputs={"video_dir": str(video_dir)}, task_videos=VIDEOS_PER_CALL, unit="B",
                 batch_work=functools.partial(extract_videos, params=params, threads=threads))


def video_items(video_dir: Path) -> Candidates:
    """Every video below `video_dir` as columns: ids, paths, sizes and mtimes (one stat each, no object per
    video), weighted by size (the bar and its ETA count bytes decoded, so a few long videos left at the end do not
    look like a few seconds of work); a file that cannot be stat'ed is in `unreadable` with the reason
    `video_fingerprint` gives. What cannot be a video (a link to a folder, a FIFO, a name that is not UTF-8 and so
    cannot be recorded) is named in a warning line and left out."""
    skipped: list[str] = []
    ids, paths, undecodable = [], [], []
    for vid, path in find_videos(video_dir, skipped):
        if utf8(vid):
            ids.append(vid)
            paths.append(path)
        else:
            undecodable.append(path)
    if skipped:
        click.echo(f"warning: skipped {plural(len(skipped), 'name')} under {video_dir} that cannot be a video file "
                   f"(links to folders are not followed; FIFOs and devices are not read; unreadable folders), such as "
                   f"{printable(skipped[0])}", err=True)
    if undecodable:
        click.echo(f"warning: skipped {plural(len(undecodable), 'video')} whose file name is not UTF-8, such as "
                   f"{printable(undecodable[0])}; rename them (e.g. `convmv -f latin1 -t utf8 -r --notest DIR`) to "
                   "extract them", err=True)
    sizes, mtimes, unreadable = [0] * len(paths), [0] * len(paths), {}
    stat = os.stat
    for index, path in enumerate(paths):
        try:
            st = stat(path)
            sizes[index], mtimes[index] = st.st_size, st.st_mtime_ns
        except OSError:
            unreadable[index] = video_fingerprint(path)["unreadable"]
    return Candidates(ids, paths, sizes=sizes, mtimes=mtimes, unreadable=unreadable,
                      weights=[max(1, size) for size in sizes])


def utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # os.fsdecode kept the bytes that are not UTF-8 as lone surrogates
        return False
    return True


def printable(path: str) -> str:
    return ascii(path) if not utf8(path) else path


def plural(count: int, noun: str) -> str:
    return f"{count:,} {noun}{'s' * (count != 1)}"


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
    cap = f", at most {params.max_frames:,} frames a video" if params.max_frames else ""
    return f"{params.fps:g} fps, {size}, JPEG q{params.quality}, decode errors: {params.on_decode_error}{cap}"


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
@click.option("--max-frames", type=click.IntRange(min=1), default=None,
              help="At most this many frames a video: one whose timestamps would give more (a gap of an hour in a "
              "few seconds of video) is a failed row, not thousands of frames. Default: no cap.")
@jobs_option()
@backend_option
@scheduler_option
@progress_option
@shard_option
def extract_frames(video_dir, workdir, fps, size, quality, on_decode_error, max_frames, jobs, backend, scheduler,
                   progress, shard):
    """Decode every video under VIDEO_DIR into W/frames/<video_id>/img_00001.jpg, ... with ffmpeg.

    The video id is the path below VIDEO_DIR without its extension (UCF101: Class/v_Class_g01_c01). Reruns
    only touch videos that are new, changed, failed before, or were extracted with other options; a run
    that was killed picks up where it stopped. Bad files become failed rows in W/manifests/frames.parquet
    and the run goes on; the exit code is 1 when any video failed.
    """
    check_dask(backend, scheduler)
    video_dir = video_dir.absolute()  # recorded for `status` and `--pairs source`, which may run from elsewhere
    params = frame_params(fps, size, quality, on_decode_error, max_frames)
    items = video_items(video_dir)
    if not items:
        raise TsnpipeError(no_videos_message(video_dir))
    mine = shard_items(items, shard)
    click.echo(f"extract-frames: {len(items):,} videos in {video_dir}"
               + (f", {len(mine):,} of them in shard {shard}" if shard else "")
               + f"; {describe(params)}; {jobs} jobs ({backend})")
    with stage_lock(workdir, "frames", shard, "tsnpipe extract-frames", len(mine)):
        summary = run_stage(Path(workdir), frames_stage(video_dir, params, thread_budget(jobs)), mine, jobs=jobs,
                            backend=backend, scheduler=scheduler, progress=progress, shard=shard)
    click.echo(summary.line())
    if summary.failed:
        raise SystemExit(1)
