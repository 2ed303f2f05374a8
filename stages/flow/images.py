"""Reading the frames a video was cut into, and writing flow as 8-bit images (the TSN convention)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import cv2
import numpy as np

from tsnpipe.stages.errors import TsnpipeError
from tsnpipe.stages.flow.params import FlowParams

FRAME_NAME = re.compile(r"^img_(\d{5,})\.jpg$")


def list_frames(frames_dir: str | os.PathLike) -> list[Path]:
    """img_00001.jpg .. img_N.jpg of a frames folder, in order; a gap in the numbering is an error."""
    folder = Path(frames_dir)
    if not folder.is_dir():
        raise TsnpipeError(f"The frames folder {folder} does not exist; run `tsnpipe extract-frames` first.")
    numbers = sorted(int(m.group(1)) for m in map(FRAME_NAME.match, os.listdir(folder)) if m)
    if not numbers:
        raise TsnpipeError(f"The frames folder {folder} has no img_00001.jpg; rerun `tsnpipe extract-frames` for it.")
    missing = sorted(set(range(1, numbers[-1] + 1)) - set(numbers))
    if missing:
        shown = ", ".join(f"img_{k:05d}.jpg" for k in missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise TsnpipeError(
            f"The frames folder {folder} is missing {len(missing)} frame file(s) ({shown}); "
            "rerun `tsnpipe extract-frames` for this video."
        )
    return [folder / f"img_{k:05d}.jpg" for k in numbers]


def read_grey(path: Path) -> np.ndarray:
    """A frame as H x W uint8 grey levels (libjpeg's own conversion, the same for both backends)."""
    image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if image is None:
        raise TsnpipeError(f"The frame {path} cannot be decoded as JPEG; rerun `tsnpipe extract-frames` for this video.")
    return image


def read_grey_frames(paths: list[Path]) -> np.ndarray:
    """Consecutive frames of one video (all of them, or a chunk) stacked as N x H x W uint8; frames of
    different sizes are an error."""
    frames = [read_grey(p) for p in paths]
    for path, frame in zip(paths, frames):
        if frame.shape != frames[0].shape:
            raise TsnpipeError(
                f"The frame {path} is {frame.shape[1]}x{frame.shape[0]} but {paths[0].name} is "
                f"{frames[0].shape[1]}x{frames[0].shape[0]}; rerun `tsnpipe extract-frames` for this video."
            )
    return np.stack(frames) if frames else np.zeros((0, 0, 0), np.uint8)


def quantize(flow: np.ndarray, bound: float) -> np.ndarray:
    """round(255 * (v + bound) / (2 * bound)), halves rounded up, clipped to 0..255, as uint8."""
    scaled = (np.asarray(flow, dtype=np.float32) + bound) * (255.0 / (2.0 * bound))
    return np.clip(np.floor(scaled + 0.5), 0, 255).astype(np.uint8)


def dequantize(image: np.ndarray, bound: float) -> np.ndarray:
    """The exact inverse of quantize inside the bound: q / 255 * 2 * bound - bound, float32."""
    return (np.asarray(image, dtype=np.float32) / 255.0 * (2.0 * bound) - bound).astype(np.float32)


def clipped_count(flow: np.ndarray, bound: float) -> int:
    """How many flow values (both components) lie outside +-bound and were clipped."""
    return int(np.count_nonzero(np.abs(flow) > bound))


def flow_image_names(pair_index: int, params: FlowParams) -> tuple[str, str]:
    """flow_x_00001.jpg / flow_y_00001.jpg for 0-based pair i (img_{i+1} -> img_{i+2})."""
    number = f"{pair_index + 1:05d}"
    return f"flow_x_{number}{params.extension}", f"flow_y_{number}{params.extension}"


def write_flow_pair(out_dir: Path, pair_index: int, flow: np.ndarray, params: FlowParams) -> int:
    """Quantize one H x W x 2 flow and write its x and y images; returns the clipped value count."""
    name_x, name_y = flow_image_names(pair_index, params)
    if params.image_format == "jpg":
        options = [cv2.IMWRITE_JPEG_QUALITY, params.jpeg_quality]
    else:
        options = [cv2.IMWRITE_PNG_COMPRESSION, 1]
    for name, component in ((name_x, flow[..., 0]), (name_y, flow[..., 1])):
        encoded, data = cv2.imencode(params.extension, quantize(component, params.bound), options)
        if not encoded:
            raise TsnpipeError(f"OpenCV could not encode the flow image {out_dir / name}.")
        with open(out_dir / name, "wb") as handle:  # a full disk is an OSError with its errno, which stops the run
            handle.write(data)
    return clipped_count(flow, params.bound)
