"""The parameters of the flow stage: everything that changes the flow images a run writes."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from tsnpipe.stages.errors import TsnpipeError

STAGE_VERSION = 1  # bump when the flow images change for the same params
BACKENDS = ("opencv", "torch")
IMAGE_FORMATS = ("jpg", "png")
PAIRS = ("frames", "source")  # consecutive extracted frames; or each extracted frame and its next source frame


@dataclass(frozen=True)
class FlowParams:
    """TV-L1 settings, quantization and image format; the runner hashes all of them.

    Defaults are OpenCV's DualTVL1 with the references' 300 inner iterations (dense_flow, TSN)
    and the TSN storage convention: clip each component to +-20, map to 0..255, JPEG.
    """

    backend: str = "opencv"
    bound: float = 20.0
    tau: float = 0.25
    lambda_: float = 0.15
    theta: float = 0.3
    nscales: int = 5
    warps: int = 5
    epsilon: float = 0.01
    inner_iterations: int = 300
    outer_iterations: int = 10
    scale_step: float = 0.8
    gamma: float = 0.0
    median_filtering: int = 5
    # torch backend: how often (in iterations) the epsilon stopping rule is evaluated.
    check_every: int = 10
    image_format: str = "jpg"
    jpeg_quality: int = 95
    pairs: str = "frames"  # see stages/flow/source_pairs.py

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise TsnpipeError(f"Flow backend {self.backend!r} is unknown; choose one of {', '.join(BACKENDS)}.")
        if self.image_format not in IMAGE_FORMATS:
            raise TsnpipeError(
                f"Flow image format {self.image_format!r} is unknown; choose one of {', '.join(IMAGE_FORMATS)}."
            )
        if self.pairs not in PAIRS:
            raise TsnpipeError(f"Flow pairs {self.pairs!r} are unknown; choose one of {', '.join(PAIRS)}.")
        if not self.bound > 0:
            raise TsnpipeError(f"The flow bound must be positive (got {self.bound}); pass e.g. --bound 20.")
        if self.median_filtering not in (0, 1, 3, 5):
            raise TsnpipeError(f"medianFiltering must be 0, 1, 3 or 5 (got {self.median_filtering}), as in OpenCV.")
        if not 0 <= self.jpeg_quality <= 100:
            raise TsnpipeError(f"JPEG quality must be 0..100 (got {self.jpeg_quality}); 95 is the references' choice.")
        if not 0 < self.scale_step < 1 or self.nscales < 1 or self.warps < 1 or self.check_every < 1:
            raise TsnpipeError("TV-L1 needs 0 < scale_step < 1 and nscales, warps, check_every >= 1; fix the flow params.")

    def hashed(self) -> dict:
        """Exactly what the flow images depend on, with the stage version: the runner hashes this.

        `pairs` joins the hash only when it is not the default, so flow computed before the option existed
        (always between consecutive frames) stays up to date.
        """
        values = asdict(self)
        if values["pairs"] == "frames":
            del values["pairs"]
        return {**values, "stage_version": STAGE_VERSION}

    @property
    def extension(self) -> str:
        return "." + self.image_format
