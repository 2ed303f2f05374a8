"""Flow at the source frame rate (`extract-flow --pairs source`): one pair per extracted frame, from the
source frame it shows to the source frame right after it.

`--pairs frames` (the default) computes flow between consecutive extracted frames: at 10 fps those are
0.1 s apart, about 2.5 times the motion of a pair of consecutive 25 fps source frames, which is what TSN,
dense_flow and two-stream-pytorch computed flow on and what the +-20 bound was chosen for. `--pairs source`
keeps the 10 fps sampling (as many pairs, as many TV-L1 runs) but the references' motion scale.

Which source frame an extracted frame shows follows ffmpeg's `fps` filter, which the frame stage uses
(`shown_source_frames`). Here ffmpeg decodes every source
frame through the frame stage's own scaling and JPEG settings into a temporary folder, and its `showinfo`
filter reports their timestamps; so the first picture of pair k is the very JPEG img_{k+1}.jpg holds, and
the second is the next source frame, made the same way. Pairs are named and counted as in frames mode (N
frames give N - 1 pairs; flow_x_00001 starts at img_00001), so splits, packing and training read either
alike. When img_{k+1} shows the video's last source frame, its pair is the flow into that frame from the one
before it (the last motion there is).
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np

from tsnpipe.stages.errors import TsnpipeError
from tsnpipe.stages.flow.driver import facts, resolve_devices
from tsnpipe.stages.flow.images import list_frames, read_grey, write_flow_pair
from tsnpipe.stages.flow.params import FlowParams
from tsnpipe.stages.frames import FrameParams, ffmpeg_executable, reason, scale_args

SOURCE_PATTERN = "src_%06d.jpg"
_SHOWINFO = re.compile(r"\bn:\s*(\d+)\s+pts:\s*(-?\d+)\s+pts_time:\s*(-?[\d.]+(?:e-?\d+)?)")
TOLERANCE = 1e-6  # seconds: timestamps print with 6 decimals; exact ticks (0.1 s at 30 fps) must count as reached


def decode_source_frames(video: Path, out_dir: Path, frames: FrameParams) -> list[float]:
    """Every source frame of `video`, scaled and encoded as the frame stage does, as out_dir/src_%06d.jpg;
    returns their timestamps in seconds, in order."""
    filters = []
    if scale := scale_args(frames):
        size, options = scale
        filters.append(f"scale={size[0]}:{size[1]}" + "".join(f":{k}={v}" for k, v in options.items()))
    filters += ["setsar=1", "showinfo"]
    command = [ffmpeg_executable(), "-hide_banner", "-nostdin", "-nostats", "-loglevel", "info",
               "-i", os.path.abspath(video),  # absolute: a file named pipe:0.mp4 is not ffmpeg's pipe protocol
               "-map", "0:v:0", "-an", "-fps_mode", "passthrough", "-vf", ",".join(filters),
               "-q:v", str(frames.quality), "-threads", "1", str(out_dir / SOURCE_PATTERN)]
    proc = subprocess.run(command, capture_output=True, text=True, errors="replace")
    if proc.returncode != 0:
        raise TsnpipeError(f"{video}: ffmpeg could not decode its source frames for --pairs source: {reason(proc.stderr)}")
    times = [float(m[3]) for m in _SHOWINFO.finditer(proc.stderr)]
    written = sum(1 for _ in out_dir.glob("src_*.jpg"))
    if not times or len(times) != written:
        raise TsnpipeError(f"{video}: ffmpeg wrote {written} source frames but reported {len(times)} timestamps; "
                           "re-encode the video or use --pairs frames.")
    return times


def shown_source_frames(times: list[float], count: int, fps: float) -> list[int]:
    """For extracted frames 0..count-1, the index of the source frame each shows.

    As ffmpeg's `fps` filter with round=up picks them: output k is the last source frame whose timestamp
    (as the filters see it) is <= k / fps; outputs before the first source frame's tick repeat the frame
    of that first tick.
    """
    shown, j = [], -1
    for k in range(count):
        tick = k / fps + TOLERANCE
        while j + 1 < len(times) and times[j + 1] <= tick:
            j += 1
        shown.append(j)
    first = next((j for j in shown if j >= 0), 0)
    return [j if j >= 0 else first for j in shown]


def source_pair_indices(times: list[float], count: int, fps: float) -> list[tuple[int, int]]:
    """(first, second) source frame indices of pairs 0..count-2: the shown frame and the next one (or, at the
    video's last source frame, the one before it and that last frame)."""
    last = len(times) - 1
    pairs = []
    for shown in shown_source_frames(times, count, fps)[: max(count - 1, 0)]:
        pairs.append((shown, shown + 1) if shown < last else (max(last - 1, 0), last))
    return pairs


def source_pairs(video: str | os.PathLike, frames_dir: str | os.PathLike, frames: FrameParams,
                 work_dir: Path) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """(pair index, first, second grey H x W uint8) of every source pair of one extracted video."""
    count = len(list_frames(frames_dir))
    times = decode_source_frames(Path(video), work_dir, frames)
    for index, (first, second) in enumerate(source_pair_indices(times, count, frames.fps)):
        yield index, read_grey(work_dir / (SOURCE_PATTERN % (first + 1))), read_grey(work_dir / (SOURCE_PATTERN % (second + 1)))


def source_flow_video(
    video: str | os.PathLike, frames_dir: str | os.PathLike, out_dir: str | os.PathLike, params: FlowParams,
    frames: FrameParams, *, device: str = "auto", batch: int = 16,
) -> dict:
    """Source-rate flow of one video (see the module docstring) into out_dir; returns its facts like `flow_video`.

    `frames` are the frame stage's params the frames in `frames_dir` were extracted with (rate, size, quality).
    """
    if not Path(video).is_file():
        raise TsnpipeError(f"The video {video} that {frames_dir} was extracted from is gone, and --pairs source "
                           "decodes it again; put it back (or run from the folder extract-frames ran in).")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    clipped, shape, written = 0, (0, 0), 0
    with tempfile.TemporaryDirectory(prefix="tsnpipe-source-frames-") as temp:
        pairs = source_pairs(video, frames_dir, frames, Path(temp))
        if params.backend == "opencv":
            from tsnpipe.stages.flow.opencv_tvl1 import create_tvl1, opencv_flow

            tvl1 = create_tvl1(params)
            for index, first, second in pairs:
                clipped += write_flow_pair(out, index, opencv_flow(tvl1, first, second), params)
                shape, written = first.shape, written + 1
        else:
            for chunk in _chunks(pairs, batch):
                for index, flow in zip((c[0] for c in chunk), _torch_flows(chunk, params, device)):
                    clipped += write_flow_pair(out, index, flow, params)
                shape, written = chunk[0][1].shape, written + len(chunk)
    return facts(written, clipped, *shape)


def _chunks(pairs: Iterator, size: int) -> Iterator[list]:
    chunk = []
    for pair in pairs:
        chunk.append(pair)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _torch_flows(chunk: list, params: FlowParams, device: str) -> np.ndarray:
    import torch

    from tsnpipe.stages.flow.torch_tvl1 import tvl1_flow

    where = resolve_devices(device)[0]
    with torch.inference_mode():
        first = torch.from_numpy(np.stack([c[1] for c in chunk])).unsqueeze(1).to(where).float()
        second = torch.from_numpy(np.stack([c[2] for c in chunk])).unsqueeze(1).to(where).float()
        return tvl1_flow(first, second, params).permute(0, 2, 3, 1).cpu().numpy()
