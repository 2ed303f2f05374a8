"""The TSN test protocol's defaults, each with the reference it follows (`tsnpipe test` and `predict`).

Kept free of imports so the CLI can show them in its help without loading torch. Where the references
differ: Caffe TSN spreads the 25 snippets evenly from the first frame, tsn-pytorch (and tsnpipe) takes
the centres of 25 equal segments; mmaction2 1.x averages softmax probabilities and offers 3 crops.
"""

TEST_SEGMENTS = 25  # tsn-pytorch test_models.py --test_segments 25; Caffe TSN tools/eval_net.py 25 frames a video
TEST_CROPS = "10"  # tsn-pytorch test_models.py --test_crops 10; Caffe TSN over_sample: 4 corners + centre, flipped
TEST_AVERAGE = "raw"  # tsn-pytorch test_models.py and Caffe TSN eval_net.py: raw class scores averaged (the paper)
CLIP_TEST_CLIPS = 10  # 3D models: R(2+1)D paper (Tran et al. 2018): clip scores averaged over 10 clips of the video
CLIP_TEST_CROPS = "3"  # 3D models: mmaction2 ThreeCrop (SlowFast's 10 x 3 views), not the R(2+1)D paper's; its C3D and torchvision's figures: centre

# A run's protocol (`train --protocol`, recorded in its params): how it trains and how `test` scores it, where the
# figures a data set quotes were made otherwise than TSN's test above. Something-Something's quoted figures
# (mmaction2's `tsn_r50_1x1x8_50e_sthv1_rgb.py` / `..._sthv2_rgb.py`) never flip in training and test the
# training's snippet count (8): V1 10 crops of 224 with the mirrored views averaged as they are (TenCrop);
# V2 3 crops of 256 along the long side of the 256 frames (ThreeCrop 256: 8/7 of the training crop).
PROTOCOLS = ("tsn", "mmaction2-sthv1", "mmaction2-sthv2")


def dataset_protocol(source: str) -> str:
    """The protocol of the figures a data set's recipe quotes: mmaction2's for Something-Something, else TSN's."""
    return {"sthv1": "mmaction2-sthv1", "sthv2": "mmaction2-sthv2"}.get(source, "tsn")


def test_views(protocol: str, arch: str, train_segments: int, train_size: int) -> tuple[int, str, int]:
    """(snippets or clips, crops, crop size) a protocol tests with, by default."""
    if protocol == "mmaction2-sthv1":
        return train_segments, "10", train_size
    if protocol == "mmaction2-sthv2":
        return train_segments, "3", train_size * 8 // 7
    if arch == "tsn":
        return TEST_SEGMENTS, TEST_CROPS, train_size
    return CLIP_TEST_CLIPS, CLIP_TEST_CROPS, train_size
