"""TV-L1 optical flow: the OpenCV backend and tsnpipe's own batched torch backend."""
