"""The OpenCV backend: cv2.optflow.DualTVL1OpticalFlow with tsnpipe's FlowParams."""

from __future__ import annotations

import cv2
import numpy as np

from tsnpipe.stages.errors import TsnpipeError
from tsnpipe.stages.flow.params import FlowParams


def create_tvl1(params: FlowParams):
    """A DualTVL1 object; fails with a fix when the plain opencv wheel has replaced opencv-contrib."""
    try:
        factory = cv2.optflow.DualTVL1OpticalFlow_create
    except AttributeError as exc:
        raise TsnpipeError(
            "OpenCV has no cv2.optflow.DualTVL1OpticalFlow_create (the plain opencv-python wheel shadows "
            "opencv-contrib); run `pip uninstall -y opencv-python opencv-python-headless` and "
            "`pip install --force-reinstall opencv-contrib-python-headless`."
        ) from exc
    return factory(
        tau=params.tau,
        lambda_=params.lambda_,
        theta=params.theta,
        nscales=params.nscales,
        warps=params.warps,
        epsilon=params.epsilon,
        innnerIterations=params.inner_iterations,  # sic: OpenCV's Python keyword has three n's
        outerIterations=params.outer_iterations,
        scaleStep=params.scale_step,
        gamma=params.gamma,
        medianFiltering=params.median_filtering,
    )


def opencv_flow(tvl1, first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Flow from `first` to `second` (H x W uint8 grey) as an H x W x 2 float32 array (x, y)."""
    return tvl1.calc(first, second, None)
