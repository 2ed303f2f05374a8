"""Decode one video into JPEG frames at a fixed rate with ffmpeg.

Frame naming (the dense_flow / mmaction2 "rawframes" convention): `img_00001.jpg` is the first frame.
File `img_{k+1:05d}.jpg` holds the picture shown at time k/fps after the video's first frame, k = 0..N-1:
ffmpeg's `fps` filter with `round=up` assigns each source frame to the first output tick at or after its
timestamp, so the picture at tick k is the last source frame whose timestamp is <= k/fps.
Rotation metadata is honoured (ffmpeg auto-rotates before our filters run), audio is ignored, and
variable-frame-rate sources are resampled on their timestamps.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import signal
import stat
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator, Sequence

import ffmpeg

from tsnpipe.stages.errors import TsnpipeError

STAGE_VERSION = 1
FRAME_PATTERN = "img_%05d.jpg"
VIDEO_SUFFIXES = (".avi", ".mp4", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".3gp", ".ts")


@dataclass(frozen=True)
class FrameParams:
    """Exactly the parameters that change the frames written; their hash decides reruns."""

    fps: float = 10.0
    short_side: int | None = 256  # resize so the shorter side has this many pixels, keep aspect
    size: tuple[int, int] | None = None  # fixed (width, height), e.g. (340, 256); wins over short_side
    quality: int = 2  # ffmpeg's JPEG qscale, 2 (best) .. 31
    on_decode_error: str = "fail"  # "fail": a video with decode errors is a failed row; "keep": keep frames
    max_frames: int | None = None  # a video whose timestamps would give more frames is a failed row

    def hashed(self) -> dict:
        hashed = {**asdict(self), "stage_version": STAGE_VERSION}
        if self.max_frames is None:  # as before the cap existed: workdirs of older versions stay up to date
            del hashed["max_frames"]
        return hashed


DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)  # no space, over quota, over a file size limit


class VideoError(TsnpipeError):
    """ffmpeg could not turn this file into frames."""


def ffmpeg_executable() -> str:
    """The ffmpeg on PATH, else the static binary shipped in the imageio-ffmpeg wheel."""
    found = shutil.which("ffmpeg")
    if found:
        return found
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def find_videos(video_dir: Path, skipped: list[str] | None = None) -> list[tuple[str, str]]:
    """Every video below `video_dir` as (video_id, path), sorted; video_id is the relative path without suffix.
    One listing per folder, no stat per regular file and plain strings (a Path each took most of the time), so
    240,000 videos are found in about a second.

    The walk never follows a link to a folder: one that points back into the tree (`ln -s .. up`) would find
    the same videos again, a loop would never end, and one that points out of it is not this folder's. A name
    that is not a regular file (a FIFO, a socket, a device, a link to one such as /dev/zero) is skipped, as
    reading it would wait for ever. What is skipped for these reasons is appended to `skipped` (paths) when
    given. A link to a file is followed; a dangling or looping one is listed, and extract-frames fails its row."""
    found = []
    root = os.fspath(video_dir)
    pending = [((), root)]
    while pending:
        parts, folder = pending.pop()
        try:
            with os.scandir(folder) as listing:
                entries = list(listing)
        except OSError:  # unreadable or vanished: its videos, if any, cannot be listed
            if skipped is not None:
                skipped.append(folder)
            continue
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                pending.append(((*parts, entry.name), entry.path))
                continue
            stem, suffix = os.path.splitext(entry.name)
            video_name = bool(stem) and suffix.lower() in VIDEO_SUFFIXES
            kind = link_kind(entry.path) if entry.is_symlink() else "video" if entry.is_file(follow_symlinks=False) \
                else "other"
            if kind == "folder" or (kind == "other" and video_name):
                if skipped is not None:
                    skipped.append(entry.path)
            elif kind == "video" and video_name:
                found.append(((*parts, entry.name), "/".join((*parts, stem)), folder))
    found.sort(key=lambda entry: entry[0])
    return [(vid, os.path.join(folder, key[-1])) for key, vid, folder in found]


def link_kind(path: str) -> str:
    """What a symbolic link leads to: "folder", "video" (a regular file, or nothing: a dangling or looping link,
    which becomes a failed row), or "other" (a FIFO, a device, a socket)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return "video"
    if stat.S_ISDIR(mode):
        return "folder"
    return "video" if stat.S_ISREG(mode) else "other"


def scale_args(params: FrameParams) -> tuple[list, dict] | None:
    """Arguments of ffmpeg's `scale` filter for the chosen size, or None to keep the source size."""
    if params.size:
        return list(params.size), {}
    if params.short_side:
        return [params.short_side, params.short_side], {"force_original_aspect_ratio": "increase"}
    return None


def ffmpeg_command(source: Path, out_dir: Path, params: FrameParams, threads: int = 1) -> list[str]:
    """The ffmpeg argument list that decodes `source` into `out_dir/img_%05d.jpg`."""
    # an absolute path: a file named pipe:0.mp4 or concat:x.mp4 is then a file, not one of ffmpeg's protocols
    stream = ffmpeg.input(os.path.abspath(source)).video.filter("fps", fps=params.fps, round="up")
    if scale := scale_args(params):
        stream = stream.filter("scale", *scale[0], **scale[1])
    stream = stream.filter("setsar", "1")
    limit = {"frames:v": params.max_frames + 1} if params.max_frames else {}  # one more tells that it was reached
    out = ffmpeg.output(stream, str(out_dir / FRAME_PATTERN), **{"q:v": params.quality, "threads": threads}, **limit)
    args = out.global_args("-hide_banner", "-nostdin", "-nostats", "-loglevel", "level+info").compile(
        cmd=ffmpeg_executable()
    )
    return args


_DURATION = re.compile(r"Duration: (\d+):(\d+):(\d+(?:\.\d+)?)")
_VIDEO_STREAM = re.compile(r"Stream #\d+:\d+.*?: Video: .*?, (\d{2,5})x(\d{2,5})")
_FPS = re.compile(r"([\d.]+) (?:fps|tbr)")


def parse_source_facts(stderr: str) -> dict:
    """Source duration, size and frame rate as ffmpeg reports them for the input."""
    facts = {"duration": None, "src_width": None, "src_height": None, "src_fps": None}
    input_part = stderr.split("Stream mapping:")[0]
    if m := _DURATION.search(input_part):
        facts["duration"] = int(m[1]) * 3600 + int(m[2]) * 60 + float(m[3])
    for line in input_part.splitlines():
        if m := _VIDEO_STREAM.search(line):
            facts["src_width"], facts["src_height"] = int(m[1]), int(m[2])
            if f := _FPS.search(line):
                facts["src_fps"] = float(f[1])
            break
    return facts


def source_facts(source: Path) -> dict:
    """Duration, size and frame rate of a video as ffmpeg reports them, without decoding it (all None when
    ffmpeg cannot open it)."""
    proc = subprocess.run([ffmpeg_executable(), "-hide_banner", "-nostdin", "-i", os.fspath(source)],
                          capture_output=True, text=True, errors="replace")
    return parse_source_facts(proc.stderr)


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "[error]" in line or "[fatal]" in line]


def reason(stderr: str) -> str:
    """The most telling line of ffmpeg's stderr, without its log prefixes."""
    lines = error_lines(stderr) or [line for line in stderr.splitlines() if line.strip()]
    last = lines[-1] if lines else "ffmpeg printed nothing"
    return re.sub(r"\[[^\]]*\] ?", "", last).strip()[:300]


def extract_video(source: Path, out_dir: Path, params: FrameParams, threads: int = 1) -> dict:
    """Decode `source` into `out_dir` (created, must not exist) and return the video's facts.

    Raises VideoError with a one-line reason when ffmpeg fails, no frame is decoded, the decoder reports
    errors (unless params.on_decode_error == "keep"), or far fewer frames come out than the header promises.
    """
    source, out_dir = Path(source), Path(out_dir)
    check_readable(source)
    out_dir.mkdir(parents=True)
    proc = subprocess.run(ffmpeg_command(source, out_dir, params, threads), capture_output=True, text=True,
                          errors="replace")
    return checked_facts(source, out_dir, params, proc.returncode, proc.stderr, parse_source_facts(proc.stderr))


def check_readable(source: Path) -> None:
    if not os.access(source, os.R_OK):
        raise VideoError(f"{source}: cannot be read (missing, a broken link, or no permission); fix or remove it.")
    if not stat.S_ISREG(source.stat().st_mode):
        raise VideoError(f"{source}: not a regular file (a FIFO, a device or a folder), which cannot be decoded; "
                         "remove it from the video folder.")
    if source.stat().st_size == 0:
        raise VideoError(f"{source}: the file is empty (0 bytes); re-download or remove it.")


def checked_facts(source: Path, out_dir: Path, params: FrameParams, returncode: int, stderr: str,
                  facts: dict) -> dict:
    """The video's facts once ffmpeg has written `out_dir`, or the VideoError (OSError for a full disk) that
    says what went wrong."""
    frames = sum(1 for _ in out_dir.glob("img_*.jpg"))
    if returncode != 0 and facts["src_width"] is None and "Input #0" in stderr:
        raise VideoError(f"{source}: the file has no video stream (audio only?); remove it from the video folder.")
    if returncode != 0:
        for code in DISK_FULL:  # the disk's fault, not the video's: an OSError the runner stops on
            if os.strerror(code) in stderr or (code == errno.EFBIG and returncode == -signal.SIGXFSZ):
                raise OSError(code, os.strerror(code), str(out_dir))
        raise VideoError(f"{source}: ffmpeg failed: {reason(stderr)}")
    if params.max_frames and frames > params.max_frames:
        raise VideoError(f"{source}: its timestamps would give more than --max-frames {params.max_frames:,} frames at "
                         f"{params.fps:g} fps (the header says {facts['duration'] or 0:,.1f} s; a gap or a wrong "
                         "timestamp?); re-encode it with even timestamps (ffmpeg -i IN -vf setpts=N/FRAME_RATE/TB "
                         "OUT), or raise --max-frames.")
    if frames == 0:
        raise VideoError(f"{source}: no video frames could be decoded ({reason(stderr)}); is it a video?")
    if error_lines(stderr) and params.on_decode_error == "fail":
        raise VideoError(f"{source}: decode errors ({reason(stderr)}); re-encode the file or pass "
                         "--on-decode-error keep to keep the frames that decode.")
    promised = max(facts["duration"] or 0.0, avi_header_duration(source))
    if promised * params.fps > 10 and frames < 0.9 * promised * params.fps and params.on_decode_error == "fail":
        raise VideoError(f"{source}: truncated: the header promises {promised:.2f} s but only "
                         f"{frames / params.fps:.2f} s decode; re-download the file.")
    with open(out_dir / "img_00001.jpg", "rb") as fh:
        width, height = jpeg_size(fh.read())
    return {"frames": frames, "width": width, "height": height, **facts}


def avi_header_duration(source: Path) -> float:
    """Duration promised by an AVI's main header (frames x frame time); 0 for other containers.

    ffmpeg estimates a truncated AVI's duration from what is left of the file, so only the header tells
    that the end is missing.
    """
    with open(source, "rb") as fh:
        head = fh.read(4096)
    at = head.find(b"avih")
    if not head.startswith(b"RIFF") or at < 0 or len(head) < at + 24:
        return 0.0
    usec_per_frame = int.from_bytes(head[at + 8:at + 12], "little")
    total_frames = int.from_bytes(head[at + 24:at + 28], "little")
    return usec_per_frame * total_frames / 1e6


def jpeg_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a JPEG's start-of-frame marker, without decoding it."""
    i = 2
    while i < len(data) - 9:
        if data[i] != 0xFF:
            i += 1
            continue
        marker = data[i + 1]
        if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):
            height = int.from_bytes(data[i + 5:i + 7], "big")
            width = int.from_bytes(data[i + 7:i + 9], "big")
            return width, height
        i += 2 + int.from_bytes(data[i + 2:i + 4], "big")
    raise VideoError("a written frame is not a readable JPEG; check the disk and rerun.")


# Several videos per ffmpeg process: the start-up (~50 ms) is paid once and the videos are decoded side by
# side, each through its own filter graph with the chain of ffmpeg_command, so every frame is the same bits.
VIDEOS_PER_CALL = 8


def filter_chain(params: FrameParams) -> str:
    """ffmpeg_command's filters as one chain: fps (round up), the resize, square pixels."""
    parts = [f"fps=fps={params.fps}:round=up"]
    if scale := scale_args(params):
        args, kwargs = scale
        parts.append("scale=" + ":".join([*map(str, args), *(f"{k}={v}" for k, v in sorted(kwargs.items()))]))
    return ",".join([*parts, "setsar=1"])


def ffmpeg_batch_command(jobs: Sequence[tuple[Path, Path]], params: FrameParams, threads: int = 1) -> list[str]:
    """One ffmpeg argument list decoding every `(source, out_dir)` of `jobs`: input k through its own graph
    into out_dir/img_%05d.jpg; `threads` for each decoder and encoder (decoding is exact whatever the count)."""
    args = [ffmpeg_executable(), "-hide_banner", "-nostdin", "-nostats", "-loglevel", "level+info"]
    for source, _ in jobs:  # absolute, as ffmpeg_command: a file named pipe:0.mp4 is a file, not a protocol
        args += ["-threads", str(threads), "-i", os.path.abspath(source)]
    chain = filter_chain(params)
    limit = ["-frames:v", str(params.max_frames + 1)] if params.max_frames else []  # as ffmpeg_command
    for k, (_, out_dir) in enumerate(jobs):
        args += ["-filter_complex", f"[{k}:v]{chain}[v{k}]", "-map", f"[v{k}]", "-q:v", str(params.quality),
                 "-threads", str(threads), *limit, str(Path(out_dir) / FRAME_PATTERN)]
    return args


def input_sections(stderr: str) -> list[str]:
    """ffmpeg's report on each input, in input order."""
    return re.split(r"Input #\d+, ", stderr.split("Stream mapping:")[0])[1:]


def extract_videos(jobs: Sequence[tuple[Path, Path]], params: FrameParams,
                   threads: int = 1) -> Iterator[tuple[int, dict | Exception]]:
    """extract_video for many videos through one ffmpeg process, yielding (job index, facts or the exception).

    The frames are those extract_video writes, bit for bit. Errors are told apart per video as before: when
    ffmpeg fails or reports any error, or one video's output does not pass the checks, those videos are
    decoded again one by one with extract_video, whose verdict stands.
    """
    ready = []
    for index, (source, out_dir) in enumerate(jobs):
        try:
            check_readable(Path(source))
            Path(out_dir).mkdir(parents=True)
            ready.append(index)
        except Exception as exc:  # one video's failure must not stop the others
            yield index, exc
    alone = ready if len(ready) == 1 else []
    if len(ready) > 1:
        proc = subprocess.run(ffmpeg_batch_command([jobs[i] for i in ready], params, threads), capture_output=True,
                              text=True, errors="replace")
        sections = input_sections(proc.stderr)
        if proc.returncode != 0 or error_lines(proc.stderr) or len(sections) != len(ready):
            alone = ready
        else:
            for index, section in zip(ready, sections):
                source, out_dir = Path(jobs[index][0]), Path(jobs[index][1])
                try:
                    yield index, checked_facts(source, out_dir, params, 0, section, parse_source_facts(section))
                except VideoError:
                    alone.append(index)
    for index in alone:
        source, out_dir = Path(jobs[index][0]), Path(jobs[index][1])
        shutil.rmtree(out_dir, ignore_errors=True)
        try:
            yield index, extract_video(source, out_dir, params, threads)
        except Exception as exc:
            yield index, exc
