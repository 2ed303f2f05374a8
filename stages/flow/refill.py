"""Continuous batching for the torch TV-L1: a batch whose free slots are refilled with new pairs.

`tvl1_flow` runs a batch level by level and warp by warp, and every warp waits for its slowest pair:
on a GPU most of its steps then run a handful of pairs (the tail). Here each pair is a small state
machine over (level, warp, outer, inner iteration), and each pyramid level size has a pool of slots.
A round runs the pools' slots until the host's next look at the stopping rule (every step on the CPU,
every `check_every` steps on a GPU, a pair that met it frozen meanwhile); then the pairs whose warp met the
stopping rule or the iteration cap leave their slot and start their next warp, or go on to the next
finer level, or come out as flow; the pool is topped up from the pairs waiting at that level. The
solver runs the pools that can fill all `batch` slots; when none can, it draws new pairs from the
source (up to `in_flight` pairs being solved), so the slots stay full until the source runs dry, and
then runs every pool with pairs, all queued on the device before the host looks at the first.
A pair goes through exactly the steps `tvl1_flow` gives it alone (same warps, median filters and
stopping checks), so its flow is the same; only its kernel companions change.

A pool's state lives at fixed addresses, one row per slot, the occupied slots first: a pair joins by
writing its row, leaves by having the last occupied row moved into its place, so nothing is copied whole.
On CUDA with a step that works in place (the Triton kernels), a round's steps are captured once per pool
and round length as a CUDA graph and replayed: a step then costs its kernels, not Python's launches,
and the empty and frozen slots (flag 0) are skipped inside the kernels.

A pool whose level size has no pairs left in its slots or waiting is dropped at once, with its memory
(10 floats a pixel a slot, 111 MB at 32 slots of 341x256; the eager step's gradient buffer, 4 more, exists
only for a step that does not work in place), unless it holds captured CUDA graphs: capturing costs more
than a round, and a frame size often comes back, so such pools stay while empty, at most `MAX_POOLS` of
them (the least recently made dropped first). Memory then follows the sizes in flight, not the run's
history: a data set of many aspect ratios (Kinetics, HMDB51 at short side 256) keeps no pool per size seen.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from tsnpipe.stages.flow.params import FlowParams
from tsnpipe.stages.flow.torch_tvl1 import (GRAD_EPSILON, centred_gradient, check_interval, image_pyramid,
                                            median_filter, pixel_grid, pyramid_sizes, tvl1_iteration, warp_bicubic)

Pair = tuple[Any, np.ndarray, np.ndarray]  # (key, first, second): H x W uint8 grey frames
# Pools with captured CUDA graphs kept while empty, for frame sizes that come back: a few sizes' pyramids.
MAX_POOLS = 24


@dataclass
class _Flowing:
    """One pair in flight: its pyramid (finest first) and where it is in it."""

    key: Any
    images: list[torch.Tensor]  # per level (4, h, w): i0, then i1 and its x and y gradients
    level: int
    warp: int = 0


@dataclass
class _Entry:
    """A pair waiting for a slot: the flow and duals it starts its next warp from."""

    pair: _Flowing
    u: torch.Tensor  # (2, h, w)
    p: torch.Tensor  # (2, 2, h, w)


@dataclass
class _Pool:
    """The slots of one level size: the state of its pairs, a row per slot at a fixed address (occupied
    slots first), and the queue for the level."""

    size: tuple[int, int]
    base: torch.Tensor
    state: dict[str, torch.Tensor]  # u, p, warped_grad, rho_c, inv_grad, live: `batch` rows each
    # The eager step's buffer for the flow's gradient; its last column (x) and row (y) are never written.
    gradient: torch.Tensor | None
    waiting: deque = field(default_factory=deque)
    pairs: list[_Flowing] = field(default_factory=list)  # pairs[n] is in slot n
    inner: list[int] = field(default_factory=list)  # iterations done in the current outer round
    outer: list[int] = field(default_factory=list)
    graphs: dict[int, Any] = field(default_factory=dict)  # round length -> CUDA graph of that many steps
    eager_lengths: set[int] = field(default_factory=set)  # lengths run once already (kernels compiled)

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


class RefillSolver:
    """TV-L1 for a stream of pairs on one device with `batch` slots per level size."""

    def __init__(self, params: FlowParams, device: torch.device, batch: int, step: Callable = tvl1_iteration,
                 in_flight: int | None = None, graphs: bool | None = None):
        self.params = params
        self.device = torch.device(device)
        self.batch = batch
        self.step = step
        self.in_place = getattr(step, "in_place", False)
        self.every = check_interval(params, self.device)  # steps between the host's looks at the stopping rule
        # CUDA graphs need a step that writes into the pool's own rows; None: wherever that holds.
        self.graphs = (self.device.type == "cuda" and self.in_place) if graphs is None else graphs
        # On a GPU, enough pairs in flight that every level's pool can fill its slots; on the CPU, where time
        # follows the pair-steps whatever the batch, no more than one batch (memory).
        default = batch if self.device.type == "cpu" else (params.nscales + 1) * batch
        self.in_flight = in_flight or default
        self.exhausted = False
        self.pools: dict[tuple[int, int], _Pool] = {}
        self.flowing = 0
        self.stats = RefillStats()

    def solve(self, source: Iterator[Pair]) -> Iterator[list[tuple[Any, torch.Tensor]]]:
        """For every pair of `source`, (key, flow (2, H, W) on the device), in lists of the pairs that finish
        together (one pool's look: one frame size), in the order they finish."""
        source = iter(source)
        self.exhausted = False
        while True:
            # The finest level that fills every slot; else new pairs; else whichever level has most to do.
            full = [pool for pool in self.pools.values() if pool.load() >= self.batch]
            if not full and not self.exhausted and self.flowing < self.in_flight:
                self.exhausted = not self._admit(source, min(self.batch, self.in_flight - self.flowing))
                continue
            # Every full pool, else every pool with pairs: all launched before the host looks at any of them,
            # so one pool's look overlaps the others' steps.
            pools = full or [pool for pool in self.pools.values() if pool.load()]
            if not pools:
                return
            pools.sort(key=lambda pl: pl.size[0] * pl.size[1], reverse=True)
            launched = [(pool, *self._launch(pool)) for pool in pools]
            for pool, length, change in launched:
                finished = self._look(pool, length, change)
                if finished:
                    yield finished

    def _pool(self, size: tuple[int, int]) -> _Pool:
        if size not in self.pools:
            rows = lambda *shape: torch.zeros(self.batch, *shape, *size, device=self.device)  # noqa: E731
            state = {"u": rows(2), "p": rows(2, 2), "warped_grad": rows(2), "rho_c": rows(1), "inv_grad": rows(1),
                     "live": torch.zeros(self.batch, device=self.device)}
            self.pools[size] = _Pool(size, pixel_grid(*size, self.device), state,
                                     None if self.in_place else rows(2, 2))
        return self.pools[size]

    def _drop_unused(self) -> None:
        """Forget every empty pool without CUDA graphs, and empty pools with graphs beyond MAX_POOLS, the least
        recently made first."""
        empty = [size for size, pool in self.pools.items() if pool.load() == 0]
        for size in [size for size in empty if not self.pools[size].graphs]:
            del self.pools[size]
        for size in [size for size in empty if size in self.pools]:
            if len(self.pools) <= MAX_POOLS:
                return
            del self.pools[size]

    def _admit(self, source: Iterator[Pair], room: int) -> bool:
        """Draw up to `room` pairs, build their pyramids, queue them at their coarsest level; False when dry."""
        drawn: dict[tuple[int, int], list[Pair]] = {}
        for _ in range(room):
            pair = next(source, None)
            if pair is None:
                break
            drawn.setdefault(pair[1].shape, []).append(pair)
        for (height, width), pairs in drawn.items():
            sizes = pyramid_sizes(height, width, self.params.nscales, self.params.scale_step)
            frames = np.stack([np.stack((first, second)) for _, first, second in pairs])
            stacked = torch.from_numpy(frames).to(self.device, non_blocking=True).float()
            per_level = []
            for level in image_pyramid(stacked, sizes, self.params.scale_step):
                i1x, i1y = centred_gradient(level[:, 1:])
                per_level.append(torch.cat((level, i1x, i1y), dim=1))
            coarsest = self._pool(sizes[-1])
            for n, (key, _, _) in enumerate(pairs):
                flowing = _Flowing(key, [images[n] for images in per_level], len(sizes) - 1)
                zeros = torch.zeros(2, *sizes[-1], device=self.device)
                coarsest.waiting.append(_Entry(flowing, zeros, torch.zeros(2, 2, *sizes[-1], device=self.device)))
                self.flowing += 1
        return len(drawn) > 0 and sum(map(len, drawn.values())) == room

    def _start_warps(self, pool: _Pool, entries: list[_Entry]) -> None:
        """Warp the second image by each entry's flow, linearise, median-filter: the start of a warp."""
        u = torch.stack([entry.u for entry in entries])
        images = torch.stack([entry.pair.images[entry.pair.level] for entry in entries])
        warped = warp_bicubic(images[:, 1:], u, pool.base)
        warped_grad = warped[:, 1:].contiguous()
        rho_c = warped[:, :1] - (warped_grad * u).sum(dim=1, keepdim=True) - images[:, :1]
        inv_grad = warped_grad.square().sum(dim=1, keepdim=True).clamp_(min=GRAD_EPSILON).reciprocal_()
        new = {"u": median_filter(u, self.params.median_filtering), "p": torch.stack([entry.p for entry in entries]),
               "warped_grad": warped_grad, "rho_c": rho_c, "inv_grad": inv_grad}
        first, last = len(pool.pairs), len(pool.pairs) + len(entries)
        for name, tensor in new.items():
            pool.state[name][first:last] = tensor
        pool.state["live"][first:last] = 1.0
        pool.pairs += [entry.pair for entry in entries]
        pool.inner += [0] * len(entries)
        pool.outer += [0] * len(entries)

    def _launch(self, pool: _Pool) -> tuple[int, torch.Tensor | None]:
        """Fill the pool's free slots and queue its steps up to the first slot's next look: every `every` steps
        and at an outer round's end. Returns the steps queued and, when every step is looked at, the changes."""
        params = self.params
        free = self.batch - len(pool.pairs)
        if free > 0 and pool.waiting:
            self._start_warps(pool, [pool.waiting.popleft() for _ in range(min(free, len(pool.waiting)))])
        inner_cap, every = params.inner_iterations, self.every
        length = min(min(every - k % every, inner_cap - k) for k in pool.inner)
        change = self._steps(pool, length)
        self.stats.steps += length
        self.stats.pair_steps += length * len(pool.pairs)
        self.stats.pixel_steps += length * len(pool.pairs) * pool.area
        self.stats.rounds += 1
        if not self.exhausted:
            self.stats.fed_steps += length
            self.stats.fed_pair_steps += length * len(pool.pairs)
        return length, change

    def _look(self, pool: _Pool, length: int, change: torch.Tensor | None) -> list[tuple[Any, torch.Tensor]]:
        """The host's look after `length` steps: pairs that met the stopping rule or the cap leave their slot,
        pairs at an outer round's end get their median filter."""
        params = self.params
        inner_cap, every = params.inner_iterations, self.every
        state = pool.occupied()
        settled = (change <= self._threshold(pool) if change is not None else state["live"] == 0).tolist()
        leaving, median = [], []
        for slot in range(len(pool.pairs)):
            k = pool.inner[slot] = pool.inner[slot] + length
            checked = k % every == 0 or k == inner_cap
            if (checked and settled[slot]) or (k == inner_cap and pool.outer[slot] == params.outer_iterations - 1):
                leaving.append(slot)
            elif k == inner_cap:
                pool.inner[slot], pool.outer[slot] = 0, pool.outer[slot] + 1
                median.append(slot)
        if median and params.median_filtering > 1:
            index = torch.tensor(median, device=self.device)
            state["u"].index_copy_(0, index, median_filter(state["u"][index], params.median_filtering))
        finished = self._retire(pool, leaving) if leaving else []
        if not pool.load():
            self._drop_unused()
        return finished

    def _threshold(self, pool: _Pool) -> float:
        """The stopping rule's bound on a pair's squared update at this level: epsilon^2 * area."""
        return self.params.epsilon**2 * pool.area

    def _steps(self, pool: _Pool, length: int) -> torch.Tensor | None:
        """`length` steps of the pool's occupied slots; when the host looks only every few steps, the flags of
        pairs that met the stopping rule drop to 0 and None is returned, else the last step's changes."""
        params, flagged = self.params, self.every > 1
        l_t, taut = params.lambda_ * params.theta, params.tau / params.theta
        scaled_epsilon = self._threshold(pool)
        if self.graphs and flagged:
            if length not in pool.graphs and length in pool.eager_lengths:
                pool.graphs[length] = self._capture(pool, length, l_t, taut, scaled_epsilon)
            if length in pool.graphs:
                pool.graphs[length].replay()
                return None
            pool.eager_lengths.add(length)  # a first run compiles the kernels; the next one is captured
        state = pool.occupied()
        g = None if pool.gradient is None else pool.gradient[: len(pool.pairs)]
        u, live, change = state["u"], state["live"] if flagged else None, None
        extra = {"out": u} if self.in_place else {}
        for _ in range(length):  # the stopping rule is met at a step; the pair stays frozen until the look
            u, change = self.step(u, state["p"], g, state["warped_grad"], state["rho_c"], state["inv_grad"],
                                  l_t, params.theta, taut, True, live, scaled_epsilon, **extra)
        if u is not state["u"]:
            state["u"].copy_(u)
        return None if flagged else change

    def _capture(self, pool: _Pool, length: int, l_t: float, taut: float, scaled_epsilon: float):
        """`length` in-place steps over all of the pool's rows (empty slots have flag 0) as a CUDA graph."""
        state, params = pool.state, self.params
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):  # other threads decode and copy meanwhile
            for _ in range(length):
                self.step(state["u"], state["p"], None, state["warped_grad"], state["rho_c"], state["inv_grad"],
                          l_t, params.theta, taut, True, state["live"], scaled_epsilon, out=state["u"])
        return graph

    def _retire(self, pool: _Pool, leaving: list[int]) -> list[tuple[Any, torch.Tensor]]:
        """Pairs whose warp ended: next warp (front of this pool's queue), next level, or finished flow."""
        state = pool.state
        index = torch.tensor(leaving, device=self.device)
        u, p = state["u"][index], state["p"][index]
        upward: list[tuple[_Flowing, torch.Tensor]] = []
        finished = []
        for n, slot in enumerate(leaving):
            pair = pool.pairs[slot]
            pair.warp += 1
            if pair.warp < self.params.warps:
                pool.waiting.appendleft(_Entry(pair, u[n], p[n]))
            elif pair.level == 0:
                self.flowing -= 1
                self.stats.pairs += 1
                finished.append((pair.key, u[n]))
            else:
                upward.append((pair, u[n]))
        for pair, flow in upward:
            pair.level -= 1
            pair.warp = 0
            size = tuple(pair.images[pair.level].shape[-2:])
            finer = F.interpolate(flow[None], size=size, mode="bilinear", align_corners=False)[0]
            finer.mul_(1.0 / self.params.scale_step)
            self._pool(size).waiting.append(_Entry(pair, finer, torch.zeros(2, 2, *size, device=self.device)))
        # Keep the occupied slots first: the pairs in the rows past the new end move into the holes before it.
        remaining = len(pool.pairs) - len(leaving)
        gone = set(leaving)
        holes = [slot for slot in leaving if slot < remaining]
        movers = [slot for slot in range(remaining, len(pool.pairs)) if slot not in gone]
        if holes:
            to, source = torch.tensor(holes, device=self.device), torch.tensor(movers, device=self.device)
            for tensor in state.values():
                tensor.index_copy_(0, to, tensor[source])
            for hole, mover in zip(holes, movers):
                pool.pairs[hole], pool.inner[hole], pool.outer[hole] = pool.pairs[mover], pool.inner[mover], pool.outer[mover]
        state["live"][remaining: len(pool.pairs)] = 0.0
        del pool.pairs[remaining:], pool.inner[remaining:], pool.outer[remaining:]
        return finished
