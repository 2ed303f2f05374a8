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
