"""TV-L1 optical flow: the OpenCV backend and tsnpipe's own batched torch backend.

Flow pair i (1-based) is the flow from img_i to img_{i+1}, stored as flow_x_0000i.jpg and
flow_y_0000i.jpg, each component quantized as round(255 * (v + bound) / (2 * bound)) clipped to 0..255.

With `pairs="source"` pair i is instead the flow from the source frame img_i shows to the next source
frame (`source_pairs`).

Modules: `params` (FlowParams, light: the CLI imports it at start-up), `driver` (flow_video,
flow_videos), `source_pairs`, `images` (frame listing, quantize / dequantize, writing), `opencv_tvl1`, `torch_tvl1`,
`groundtruth` (Middlebury .flo files, end-point error).
Only the light params are imported here, so `tsnpipe --help` loads neither OpenCV nor torch.
"""

from tsnpipe.stages.flow.params import BACKENDS, IMAGE_FORMATS, PAIRS, FlowParams

__all__ = ["BACKENDS", "IMAGE_FORMATS", "PAIRS", "FlowParams"]
