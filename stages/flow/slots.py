"""The state of the refilled TV-L1 solver (refill.py): a pair in flight, a pair waiting for a slot, the slots
of one level size, and what the solver did."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class Flowing:
    """One pair in flight: its pyramid (finest first) and where it is in it."""

    key: Any
    images: list[torch.Tensor]  # per level (4, h, w): i0, then i1 and its x and y gradients
    level: int
    warp: int = 0


@dataclass
class Entry:
    """A pair waiting for a slot: the flow and duals it starts its next warp from."""

    pair: Flowing
    u: torch.Tensor | None  # (2, h, w); None: zero flow (a pair's coarsest level)
    p: torch.Tensor | None  # (2, 2, h, w); None: zero duals (a pair's first warp at a level)


@dataclass
class Pool:
    """The slots of one level size: the state of its pairs, a row per slot at a fixed address (occupied
    slots first), and the queue for the level."""

    size: tuple[int, int]
    base: torch.Tensor
    state: dict[str, torch.Tensor]  # u, p, warped_grad, rho_c, inv_grad, live: `batch` rows each
    # The eager step's buffer for the flow's gradient; its last column (x) and row (y) are never written.
    gradient: torch.Tensor | None
    waiting: deque = field(default_factory=deque)
    pairs: list[Flowing] = field(default_factory=list)  # pairs[n] is in slot n
    inner: list[int] = field(default_factory=list)  # iterations done in the current outer round
    outer: list[int] = field(default_factory=list)
    graphs: dict[int, Any] = field(default_factory=dict)  # round length -> CUDA graph of that many steps
    eager_lengths: set[int] = field(default_factory=set)  # lengths run once already (kernels compiled)
    zeros: torch.Tensor | None = None  # (2, 2, h, w) zeros: the flow and duals a warp starts from when None

    def load(self) -> int:
        return len(self.pairs) + len(self.waiting)

    @property
    def area(self) -> int:
        return self.size[0] * self.size[1]

    def occupied(self) -> dict[str, torch.Tensor]:
        return {name: tensor[: len(self.pairs)] for name, tensor in self.state.items()}


@dataclass
class RefillStats:
    """What the solver did: primal-dual steps launched, the pair-steps they computed, and the pixels those
    covered (a step's memory traffic follows its pixels: triton_tvl1.BYTES_PER_PIXEL_STEP)."""

    steps: int = 0
    pair_steps: int = 0
    pixel_steps: int = 0
    rounds: int = 0
    pairs: int = 0
    looks: int = 0  # host looks at a pool: each waits for the device (one sync)
    # The same while the source still had pairs: the end of a run drains the last pairs through partly
    # filled levels, as long as its slowest pair needs (at most levels x warps x the iteration cap).
    fed_steps: int = 0
    fed_pair_steps: int = 0

    @property
    def mean_active(self) -> float:
        return self.pair_steps / self.steps if self.steps else 0.0

    @property
    def mean_active_while_fed(self) -> float:
        return self.fed_pair_steps / self.fed_steps if self.fed_steps else 0.0
