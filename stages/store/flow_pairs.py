"""The `pairs` flow layout of the stores: each flow pair as one array, x above y, decoded in one call.

Why: a TSN flow clip is K segments x L pairs x 2 images; read as separate JPEGs it costs 2 x K x L
decodes plus the stacking of as many small arrays, which made the flow loader the slowest part of flow
training. In the `pairs` layout the store keeps, per flow pair, the pixels of the x image and of the y
image as one uint8 array [2, H, W], compressed with LZ4 (lossless; decompressing costs a fraction of a
JPEG decode and lands in place in the [T, 2, H, W] stack the loader hands over).

What stays exactly the same: the pixels. A PNG flow image is lossless, so its pixels are the file's; a
JPEG flow image is decoded once, at pack time, with the same OpenCV decoder a folder read uses, so a
read from the store gives the arrays a read of the folder gives, pixel for pixel (tests hold every
image of a video to that). What is not kept: the JPEG bytes themselves, so `train --gpu-decode`
(which sends JPEG bytes to the device) needs the `images` layout, the one tsnpipe wrote before, which
stores each flow image's bytes as they are. Each video's entry records its layout (absent: `images`),
so a store written before still reads, and one store may hold both while a repack is under way.
Size: ~25-30 KB a 340x256 pair against ~10 KB for two JPEGs at quality 95 (DIS flow of the sample clips).
"""

from __future__ import annotations

import numpy as np

from tsnpipe.stages.errors import TsnpipeError

FLOW_LAYOUTS = ("pairs", "images")
PAIRS = "flow_xy"  # the stores' name for the pair arrays (LMDB key part, HDF5 dataset)
LZ4_LEVEL = 1  # high-compression mode, level 1: ~30% smaller than LZ4's fast mode, decoded as fast


def check_layout(layout: str) -> str:
    if layout not in FLOW_LAYOUTS:
        raise TsnpipeError(f"Unknown flow layout {layout!r}; use --flow-layout pairs or --flow-layout images.")
    return layout


def encode_pairs(video_id: str, xs: list[bytes], ys: list[bytes]) -> tuple[list[bytes], list[int]]:
    """(one compressed [2, H, W] array per pair, [H, W]) from a video's flow x and y image bytes."""
    import lz4.block

    from tsnpipe.stages.store.reader import decode_image

    blobs, size = [], None
    for position, (x_bytes, y_bytes) in enumerate(zip(xs, ys)):
        x, y = decode_image(x_bytes, "flow_x"), decode_image(y_bytes, "flow_y")
        if x.shape != y.shape or (size is not None and list(x.shape) != size):
            raise TsnpipeError(f"The flow images of {video_id} differ in size (pair {position + 1}: x {x.shape}, "
                               f"y {y.shape}); re-run `tsnpipe extract-flow` for it before packing.")
        size = list(x.shape)
        blobs.append(lz4.block.compress(np.stack([x, y]).tobytes(), mode="high_compression", compression=LZ4_LEVEL))
    return blobs, size or [0, 0]


def decode_pairs(blobs: list[bytes], size: list[int]) -> np.ndarray:
    """uint8 [T, 2, H, W] (x then y) from the compressed pair arrays of a video."""
    import lz4.block

    height, width = size
    out = np.empty((len(blobs), 2, height, width), dtype=np.uint8)
    flat = out.reshape(len(blobs), -1)
    for index, blob in enumerate(blobs):
        try:
            flat[index] = np.frombuffer(lz4.block.decompress(blob), dtype=np.uint8)
        except (lz4.block.LZ4BlockError, ValueError) as error:
            raise TsnpipeError(f"A stored flow pair ({len(blob)} bytes) does not decompress to {height}x{width} x 2 "
                               f"({error}); re-pack that video.") from None
    return out
