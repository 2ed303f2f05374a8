"""Continuous batching for the torch TV-L1: a batch whose free slots are refilled with new pairs.

`tvl1_flow` runs a batch level by level and warp by warp, and every warp waits for its slowest pair:
on a GPU most of its steps then run a handful of pairs (the tail). Here each pair is a small state
machine over (level, warp, outer, inner iteration), and each pyramid level size has a pool of slots.
A round runs the pools' slots until the host's next look at the stopping rule; then the pairs whose warp
met the stopping rule or the iteration cap leave their slot and start their next warp, or go on to the next
finer level, or come out as flow; the pool is topped up from the pairs waiting at that level.

The solver runs the pools that can fill all `batch` slots; when none can, it draws new pairs from the source
(up to `in_flight` pairs being solved), so the slots stay full until the source runs dry, and then runs
every pool with pairs, all queued on the device before the host looks at the first.
A pair goes through exactly the steps `tvl1_flow` gives it alone (same warps, median filters and
stopping checks), so its flow is the same; only its kernel companions change.

How often the host looks is what a GPU run is bound by: a look waits for the device. On the CPU, where a
look costs nothing, the host looks after every step. On a GPU the device decides alone between looks: the
step kernel freezes a pair at the step that meets the stopping rule (its flag drops to 0), and the host,
which knows every slot's iteration counts without asking (they follow from the steps it queued), queues
the outer rounds' median filters (for the slots still live, by mask) and freezes the slots whose last
outer round ended, as device work with index tensors sent ahead from pinned memory. It looks, one sync
reading the flags, once per `look_steps` (30) steps of a pool; a frozen pair keeps its flow while it waits,
so a later look changes the slots' occupancy, never a flow. Rounds are a divisor of the inner iteration
count long, so every slot of a pool (each joined at a look, at iteration 0) reaches its outer rounds'
ends together with the others.

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

from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from tsnpipe.stages.flow.params import FlowParams
from tsnpipe.stages.flow.slots import Entry, Flowing, Pool, RefillStats
from tsnpipe.stages.flow.torch_tvl1 import (GRAD_EPSILON, centred_gradient, check_interval, image_pyramid,
                                            median_filter, pixel_grid, pyramid_sizes, tvl1_iteration, warp_bicubic)

Pair = tuple[Any, np.ndarray, np.ndarray]  # (key, first, second): H x W uint8 grey frames
# Pools with captured CUDA graphs kept while empty, for frame sizes that come back: a few sizes' pyramids.
MAX_POOLS = 24
# On a GPU the host looks at a pool (one sync) once per this many of its steps, at least.
LOOK_STEPS = 30


class RefillSolver:
    """TV-L1 for a stream of pairs on one device with `batch` slots per level size."""

    def __init__(self, params: FlowParams, device: torch.device, batch: int, step: Callable = tvl1_iteration,
                 in_flight: int | None = None, graphs: bool | None = None, look_steps: int = LOOK_STEPS):
        self.params = params
        self.device = torch.device(device)
        self.batch = batch
        self.step = step
        self.in_place = getattr(step, "in_place", False)
        self.every = check_interval(params, self.device)  # 1: the host looks after every step (the CPU)
        # Between looks on a GPU: rounds of `round_steps` (a divisor of the inner iteration count, so the slots
        # reach their outer rounds' ends together), `rounds_per_look` of them.
        cap = params.inner_iterations
        self.round_steps = 1 if self.every == 1 else max(d for d in range(1, cap + 1) if cap % d == 0 and d <= look_steps)
        self.rounds_per_look = 1 if self.every == 1 else -(-look_steps // self.round_steps)
        # CUDA graphs need a step that writes into the pool's own rows; None: wherever that holds.
        self.graphs = (self.device.type == "cuda" and self.in_place) if graphs is None else graphs
        # On a GPU, enough pairs in flight that every level's pool can fill its slots; on the CPU, where time
        # follows the pair-steps whatever the batch, no more than one batch (memory).
        default = batch if self.device.type == "cpu" else (params.nscales + 1) * batch
        self.in_flight = in_flight or default
        self.exhausted = False
        self.pools: dict[tuple[int, int], Pool] = {}
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

    def _index(self, slots: list[int]) -> torch.Tensor:
        """`slots` as an index tensor on the device, sent without waiting for the device (pinned memory)."""
        index = torch.tensor(slots, dtype=torch.long)
        if self.device.type != "cuda":
            return index.to(self.device)
        return index.pin_memory().to(self.device, non_blocking=True)

    def _pool(self, size: tuple[int, int]) -> Pool:
        if size not in self.pools:
            rows = lambda *shape: torch.zeros(self.batch, *shape, *size, device=self.device)  # noqa: E731
            state = {"u": rows(2), "p": rows(2, 2), "warped_grad": rows(2), "rho_c": rows(1), "inv_grad": rows(1),
                     "live": torch.zeros(self.batch, device=self.device)}
            self.pools[size] = Pool(size, pixel_grid(*size, self.device), state,
                                     None if self.in_place else rows(2, 2),
                                     zeros=torch.zeros(2, 2, *size, device=self.device))
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
            frames = torch.from_numpy(np.stack([np.stack((first, second)) for _, first, second in pairs]))
            if self.device.type == "cuda":  # pinned, so the copy does not wait for the kernels queued before it
                frames = frames.pin_memory()
            stacked = frames.to(self.device, non_blocking=True).float()
            per_level = []
            for level in image_pyramid(stacked, sizes, self.params.scale_step):
                i1x, i1y = centred_gradient(level[:, 1:])
                per_level.append(torch.cat((level, i1x, i1y), dim=1))
            coarsest = self._pool(sizes[-1])
            for n, (key, _, _) in enumerate(pairs):
                flowing = Flowing(key, [images[n] for images in per_level], len(sizes) - 1)
                coarsest.waiting.append(Entry(flowing, None, None))
                self.flowing += 1
        return len(drawn) > 0 and sum(map(len, drawn.values())) == room

    def _start_warps(self, pool: Pool, entries: list[Entry]) -> None:
        """Warp the second image by each entry's flow, linearise, median-filter: the start of a warp, for all
        the entries in one launch per operation."""
        zero_u, zero_p = pool.zeros[0], pool.zeros
        u = torch.stack([zero_u if entry.u is None else entry.u for entry in entries])
        images = torch.stack([entry.pair.images[entry.pair.level] for entry in entries])
        warped = warp_bicubic(images[:, 1:], u, pool.base)
        warped_grad = warped[:, 1:].contiguous()
        rho_c = warped[:, :1] - (warped_grad * u).sum(dim=1, keepdim=True) - images[:, :1]
        inv_grad = warped_grad.square().sum(dim=1, keepdim=True).clamp_(min=GRAD_EPSILON).reciprocal_()
        first, last = len(pool.pairs), len(pool.pairs) + len(entries)
        if all(entry.p is None for entry in entries):
            pool.state["p"][first:last].zero_()
        else:
            pool.state["p"][first:last] = torch.stack([zero_p if entry.p is None else entry.p for entry in entries])
        new = {"u": median_filter(u, self.params.median_filtering), "warped_grad": warped_grad, "rho_c": rho_c,
               "inv_grad": inv_grad}
        for name, tensor in new.items():
            pool.state[name][first:last] = tensor
        pool.state["live"][first:last] = 1.0
        pool.pairs += [entry.pair for entry in entries]
        pool.inner += [0] * len(entries)
        pool.outer += [0] * len(entries)

    def _launch(self, pool: Pool) -> tuple[int, torch.Tensor | None]:
        """Fill the pool's free slots and queue its steps up to the host's next look at it. Returns the steps
        queued and, when every step is looked at (the CPU), the last step's changes."""
        free = self.batch - len(pool.pairs)
        if free > 0 and pool.waiting:
            self._start_warps(pool, [pool.waiting.popleft() for _ in range(min(free, len(pool.waiting)))])
        if self.every == 1:
            return 1, self._round(pool, 1)
        queued = 0
        for _ in range(self.rounds_per_look):
            running = [k for k, outer in zip(pool.inner, pool.outer) if outer < self.params.outer_iterations]
            if not running:  # every slot's warp has ended: only the look is left
                break
            length = min(self.round_steps, min(self.params.inner_iterations - k for k in running))
            self._round(pool, length)
            self._outer_rounds(pool, length)
            queued += length
        return queued, None

    def _round(self, pool: Pool, length: int) -> torch.Tensor | None:
        change = self._steps(pool, length)
        self.stats.steps += length
        self.stats.pair_steps += length * len(pool.pairs)
        self.stats.pixel_steps += length * len(pool.pairs) * pool.area
        self.stats.rounds += 1
        if not self.exhausted:
            self.stats.fed_steps += length
            self.stats.fed_pair_steps += length * len(pool.pairs)
        return change

    def _outer_rounds(self, pool: Pool, length: int) -> None:
        """After `length` steps queued between looks: the slots whose outer round ended get their median filter
        (those still live, by mask) or, after the last outer round, are frozen until the look; on the device,
        without waiting for it. A slot past its last round has outer == outer_iterations."""
        params, median, frozen = self.params, [], []
        for slot, k in enumerate(pool.inner):
            if pool.outer[slot] >= params.outer_iterations:
                continue
            pool.inner[slot] = k = k + length
            if k < params.inner_iterations:
                continue
            pool.inner[slot], pool.outer[slot] = 0, pool.outer[slot] + 1
            (frozen if pool.outer[slot] == params.outer_iterations else median).append(slot)
        state = pool.state
        if frozen:
            state["live"].index_fill_(0, self._index(frozen), 0.0)
        if median and params.median_filtering > 1:
            if len(median) == len(pool.pairs):  # the usual case: every slot's round ended together
                u, live = state["u"][: len(median)], state["live"][: len(median)].view(-1, 1, 1, 1)
                torch.where(live > 0, median_filter(u, params.median_filtering), u, out=u)
                return
            index = self._index(median)
            u, live = state["u"][index], state["live"][index].view(-1, 1, 1, 1)
            state["u"].index_copy_(0, index, torch.where(live > 0, median_filter(u, params.median_filtering), u))

    def _look(self, pool: Pool, length: int, change: torch.Tensor | None) -> list[tuple[Any, torch.Tensor]]:
        """The host's look: pairs that met the stopping rule or the cap leave their slot; on the CPU (a look
        every step) the pairs at an outer round's end also get their median filter here."""
        self.stats.looks += 1
        if change is None:  # frozen flags: the stopping rule met, or the last outer round ended
            leaving = [slot for slot, live in enumerate(pool.state["live"][: len(pool.pairs)].tolist()) if not live]
        else:
            leaving = self._settle(pool, (change <= self._threshold(pool)).tolist())
        finished = self._retire(pool, leaving) if leaving else []
        if not pool.load():
            self._drop_unused()
        return finished

    def _settle(self, pool: Pool, settled: list[bool]) -> list[int]:
        """After one step looked at: the slots that leave; the others' counts advance (median at a round's end)."""
        params, leaving, median = self.params, [], []
        for slot in range(len(pool.pairs)):
            k = pool.inner[slot] = pool.inner[slot] + 1
            if settled[slot] or (k == params.inner_iterations and pool.outer[slot] == params.outer_iterations - 1):
                leaving.append(slot)
            elif k == params.inner_iterations:
                pool.inner[slot], pool.outer[slot] = 0, pool.outer[slot] + 1
                median.append(slot)
        if median and params.median_filtering > 1:
            u, index = pool.state["u"], self._index(median)
            u.index_copy_(0, index, median_filter(u[index], params.median_filtering))
        return leaving

    def _threshold(self, pool: Pool) -> float:
        """The stopping rule's bound on a pair's squared update at this level: epsilon^2 * area."""
        return self.params.epsilon**2 * pool.area

    def _steps(self, pool: Pool, length: int) -> torch.Tensor | None:
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

    def _capture(self, pool: Pool, length: int, l_t: float, taut: float, scaled_epsilon: float):
        """`length` in-place steps over all of the pool's rows (empty slots have flag 0) as a CUDA graph."""
        state, params = pool.state, self.params
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):  # other threads decode and copy meanwhile
            for _ in range(length):
                self.step(state["u"], state["p"], None, state["warped_grad"], state["rho_c"], state["inv_grad"],
                          l_t, params.theta, taut, True, state["live"], scaled_epsilon, out=state["u"])
        return graph

    def _retire(self, pool: Pool, leaving: list[int]) -> list[tuple[Any, torch.Tensor]]:
        """Pairs whose warp ended: next warp (front of this pool's queue), next level, or finished flow. The
        pairs that climb a level are upsampled together, one launch per level size."""
        state = pool.state
        index = self._index(leaving)
        u, p = state["u"][index], state["p"][index]
        upward: dict[tuple[int, int], list[tuple[Flowing, int]]] = {}
        finished = []
        for n, slot in enumerate(leaving):
            pair = pool.pairs[slot]
            pair.warp += 1
            if pair.warp < self.params.warps:
                pool.waiting.appendleft(Entry(pair, u[n], p[n]))
            elif pair.level == 0:
                self.flowing -= 1
                self.stats.pairs += 1
                finished.append((pair.key, u[n]))
            else:
                pair.level, pair.warp = pair.level - 1, 0
                upward.setdefault(tuple(pair.images[pair.level].shape[-2:]), []).append((pair, n))
        for size, climbing in upward.items():
            flows = u[self._index([n for _, n in climbing])] if len(climbing) < len(leaving) else u
            finer = F.interpolate(flows, size=size, mode="bilinear", align_corners=False).mul_(1.0 / self.params.scale_step)
            target = self._pool(size)
            target.waiting.extend(Entry(pair, finer[m], None) for m, (pair, _) in enumerate(climbing))
        self._compact(pool, leaving)
        return finished

    def _compact(self, pool: Pool, leaving: list[int]) -> None:
        """Keep the occupied slots first: the pairs in the rows past the new end move into the holes before it."""
        state = pool.state
        remaining = len(pool.pairs) - len(leaving)
        gone = set(leaving)
        holes = [slot for slot in leaving if slot < remaining]
        movers = [slot for slot in range(remaining, len(pool.pairs)) if slot not in gone]
        if holes:
            to, source = self._index(holes), self._index(movers)
            for tensor in state.values():
                tensor.index_copy_(0, to, tensor[source])
            for hole, mover in zip(holes, movers):
                pool.pairs[hole], pool.inner[hole], pool.outer[hole] = pool.pairs[mover], pool.inner[mover], pool.outer[mover]
        state["live"][remaining: len(pool.pairs)] = 0.0
        del pool.pairs[remaining:], pool.inner[remaining:], pool.outer[remaining:]
