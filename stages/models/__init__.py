"""Clip classifiers beside TSN: C3D (defined here) and torchvision's R3D-18, MC3-18 and R(2+1)D-18.

One module per family: `c3d.py` (the published C3D layout), `video_resnet.py` (torchvision's video
ResNets and their Kinetics-400 weights), `clip_net.py` (the head and the clip averaging every 3D
model shares). This file stays free of torch so option parsing can import the names.
"""

ARCHS = ("tsn", "c3d", "r3d_18", "mc3_18", "r2plus1d_18")
VIDEO_RESNETS = ("r3d_18", "mc3_18", "r2plus1d_18")
CLIP_ARCHS = ("c3d", *VIDEO_RESNETS)
C3D_MIN_CLIP_LEN = 16  # four 2x temporal pools: 16 -> 1
# The RGB input a C3D's weights expect (train.clips.normalise_clip; `--c3d-input`, auto picks by the weights file).
C3D_INPUTS = ("kinetics", "sports1m")
