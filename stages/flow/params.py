"""The parameters of the flow stage: everything that changes the flow images a run writes."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from tsnpipe.stages.errors import TsnpipeError

# Bump when the flow images change for the same params (2: 30 x 10 iterations, the references';
# 3: the torch backend samples its pyramid and warps as OpenCV does and stops at OpenCV's iteration).
STAGE_VERSION = 3
BACKENDS = ("opencv", "torch")
IMAGE_FORMATS = ("jpg", "png")
PAIRS = ("frames", "source")  # consecutive extracted frames; or each extracted frame and its next source frame


@dataclass(frozen=True)
class FlowParams:
    """TV-L1 settings, quantization and image format; the runner hashes all that changes the flow (`hashed`).

    Two references fix the TV-L1 values. dense_flow's CPU tool (the flow of most TSN reproductions)
    calls OpenCV's DualTVL1 with its defaults: 30 inner x 10 outer iterations a warp, a 5x5 median
    filter at the start of each outer iteration. TSN's own extraction used OpenCV's CUDA TV-L1:
    300 iterations a warp, no median filter. 30 x 10 = 300, so both cap a warp at 300 iterations;
    tsnpipe follows the CPU tool. The storage convention (clip to +-20, map to 0..255, JPEG) is TSN's.
    """

    backend: str = "opencv"
    bound: float = 20.0  # TSN / dense_flow: each component clipped to +-20 px before mapping to 0..255
    tau: float = 0.25  # OpenCV DualTVL1 default (the same in its CUDA TV-L1)
    lambda_: float = 0.15  # OpenCV default
    theta: float = 0.3  # OpenCV default
    nscales: int = 5  # OpenCV default
    warps: int = 5  # OpenCV default
    epsilon: float = 0.01  # OpenCV default: stop once the mean squared flow update is below epsilon^2
    inner_iterations: int = 30  # OpenCV / dense_flow CPU default (TSN's CUDA TV-L1: 300 in one run)
    outer_iterations: int = 10  # OpenCV / dense_flow CPU default (TSN's CUDA TV-L1 has no outer loop)
    scale_step: float = 0.8  # OpenCV default
    gamma: float = 0.0  # OpenCV default: no illumination term
    median_filtering: int = 5  # OpenCV / dense_flow CPU default (TSN's CUDA TV-L1: none)
    # torch backend on a GPU, one batch solved level by level (`tvl1_flow`): how often (in iterations) the host
    # looks at the stopping rule. The rule is met at the same iteration as in OpenCV whatever this is (pairs wait
    # frozen for the look): it trades syncs, not flow. extract-flow's refilled solver looks once per 30 steps of
    # a pool (refill.LOOK_STEPS) and uses this only to tell a GPU's looks from the CPU's (every step).
    check_every: int = 10
    image_format: str = "jpg"  # dense_flow and TSN store JPEG
    jpeg_quality: int = 95  # OpenCV's imwrite default, which dense_flow writes with
    pairs: str = "frames"  # consecutive extracted frames (see stages/flow/source_pairs.py for "source")

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
        if self.inner_iterations < 1 or self.outer_iterations < 1:
            raise TsnpipeError(
                f"TV-L1 needs at least one inner and one outer iteration (got {self.inner_iterations}x"
                f"{self.outer_iterations}); pass e.g. --iterations 30x10."
            )
        if not 0 < self.scale_step < 1 or self.nscales < 1 or self.warps < 1 or self.check_every < 1:
            raise TsnpipeError("TV-L1 needs 0 < scale_step < 1 and nscales, warps, check_every >= 1; fix the flow params.")

    def hashed(self) -> dict:
        """Exactly what the flow images depend on, with the stage version: the runner hashes this.

        `pairs` joins the hash only when it is not the default ("frames", the only pairing before the option
        existed), so the default's hash does not depend on the option's presence. `check_every` never joins
        it: pairs wait frozen for the host's look, so it changes how often the host syncs, not the flow.
        """
        values = asdict(self)
        del values["check_every"]
        if values["pairs"] == "frames":
            del values["pairs"]
        return {**values, "stage_version": STAGE_VERSION}

    @property
    def extension(self) -> str:
        return "." + self.image_format
