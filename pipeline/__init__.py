"""tsnpipe: Temporal Segment Networks from a folder of videos to fused two-stream scores."""

__version__ = "0.1.0"
