"""TV-L1 optical flow: the OpenCV backend and tsnpipe's own batched torch backend.

Flow pair i (1-based) is the flow from img_i to img_{i+1}, stored as flow_x_0000i.jpg and
flow_y_0000i.jpg, each component quantized as round(255 * (v + bound) / (2 * bound)) clipped to 0..255.
torch is imported only when the torch backend runs.
"""

from tsnpipe.stages.flow.driver import flow_video, flow_videos, resolve_device
from tsnpipe.stages.flow.images import dequantize, list_frames, quantize
from tsnpipe.stages.flow.params import BACKENDS, IMAGE_FORMATS, FlowParams

__all__ = [
    "BACKENDS",
    "IMAGE_FORMATS",
    "FlowParams",
    "dequantize",
    "flow_video",
    "flow_videos",
    "list_frames",
    "quantize",
    "resolve_device",
]
