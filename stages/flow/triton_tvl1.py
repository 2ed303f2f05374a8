"""The TV-L1 primal-dual iteration as two Triton kernels, for the torch backend on CUDA.

`tvl1_iteration` in torch_tvl1 is the reference and the CPU implementation; it runs about twenty small
kernels a step, so on a GPU a step costs the launches, not the arithmetic. Here one step is two kernels
over (pair, block of pixels):
- primal: thresholding (TH) and u = v + theta * div(p), writing the new flow into a fresh buffer and,
  on the steps that measure, each block's squared change;
- dual: p = (p + taut * grad u) / (1 + taut * |grad u|) per flow component, in place; on the steps that
  measure, its first block of each pair adds the pair's block sums in a fixed order (no atomics: the
  stopping rule sees the same sums on every run) and, given `live` flags, sets the pair's flag to 0 once
  the sum meets the rule.
A pair whose flag is 0 (it met the rule, the host has not looked yet) keeps its flow and duals in both
kernels, as in the reference. Given `out=u` with flags, the step runs in place and the kernels skip the
frozen pairs' pixels altogether (masked loads and stores touch no memory): the refilled batch keeps its
slots at fixed addresses for CUDA graphs, and an empty slot (flag 0) then costs a few scalar reads.
The arrays and their layout are those of `tvl1_iteration`; `g` is not needed (the gradient stays in
registers). With TRITON_INTERPRET=1 set before Triton is imported, the kernels run on CPU tensors
through Triton's interpreter: that is how the tests compare them with the reference without a GPU.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK = 1024
# Bytes a step moves to and from memory per pixel of a pair, neighbours read through the cache: the primal
# kernel reads the flow (2 floats), warped gradient (2), rho_c, 1/|grad|^2 and the duals (4) and writes the new
# flow (2); the dual kernel reads the new flow (2) and the duals (4) and writes the duals (4). 22 float32s.
BYTES_PER_PIXEL_STEP = 22 * 4


@triton.jit
def _primal_kernel(u_ptr, p_ptr, wg_ptr, rho_ptr, ig_ptr, live_ptr, seen_ptr, out_ptr, part_ptr, height, width,
                   blocks, l_t, theta, MEASURE: tl.constexpr, HAS_LIVE: tl.constexpr, SKIP_FROZEN: tl.constexpr,
                   BLOCK: tl.constexpr):
    pair = tl.program_id(0).to(tl.int64)
    block = tl.program_id(1)
    area = height * width
    offs = block * BLOCK + tl.arange(0, BLOCK)
    if SKIP_FROZEN:  # in place: a frozen or empty slot is left as it is, its pixels never read
        inside = offs < tl.where(tl.load(live_ptr + pair) != 0.0, area, 0)
    else:
        inside = offs < area
    x = offs % width
    has_left = inside & (x > 0)
    has_up = inside & (offs >= width)
    flow = u_ptr + pair * 2 * area  # (2, H, W)
    grad = wg_ptr + pair * 2 * area  # (2, H, W)
    dual = p_ptr + pair * 4 * area  # (component 2, direction 2, H, W)
    u0 = tl.load(flow + offs, mask=inside, other=0.0)
    u1 = tl.load(flow + area + offs, mask=inside, other=0.0)
    gx = tl.load(grad + offs, mask=inside, other=0.0)
    gy = tl.load(grad + area + offs, mask=inside, other=0.0)
    rho = tl.load(rho_ptr + pair * area + offs, mask=inside, other=0.0) + gx * u0 + gy * u1
    coef = rho * tl.load(ig_ptr + pair * area + offs, mask=inside, other=0.0)
    coef = tl.minimum(tl.maximum(coef, -l_t), l_t)
    # Divergence of p per flow component: backward differences, zero outside the image.
    p0x = dual + offs
    p0y = dual + area + offs
    p1x = dual + 2 * area + offs
    p1y = dual + 3 * area + offs
    div0 = (tl.load(p0x, mask=inside, other=0.0) - tl.load(p0x - 1, mask=has_left, other=0.0)
            + tl.load(p0y, mask=inside, other=0.0) - tl.load(p0y - width, mask=has_up, other=0.0))
    div1 = (tl.load(p1x, mask=inside, other=0.0) - tl.load(p1x - 1, mask=has_left, other=0.0)
            + tl.load(p1y, mask=inside, other=0.0) - tl.load(p1y - width, mask=has_up, other=0.0))
    delta0 = theta * div0 - coef * gx
    delta1 = theta * div1 - coef * gy
    if HAS_LIVE:  # a pair that met the stopping rule keeps its flow
        live = tl.load(live_ptr + pair)
        tl.store(seen_ptr + pair, live)  # the flag this step started with, for the dual kernel (same value)
        delta0 = delta0 * live
        delta1 = delta1 * live
    new0 = u0 + delta0
    new1 = u1 + delta1
    out = out_ptr + pair * 2 * area
    tl.store(out + offs, new0, mask=inside)
    tl.store(out + area + offs, new1, mask=inside)
    if MEASURE:
        change = tl.where(inside, delta0 * delta0 + delta1 * delta1, 0.0)
        tl.store(part_ptr + pair * blocks + block, tl.sum(change, axis=0))


@triton.jit
def _dual_kernel(u_ptr, p_ptr, live_ptr, seen_ptr, part_ptr, change_ptr, height, width, blocks, taut,
                 scaled_epsilon, MEASURE: tl.constexpr, HAS_LIVE: tl.constexpr, SKIP_FROZEN: tl.constexpr,
                 BLOCK: tl.constexpr, BLOCKS: tl.constexpr):
    pair = tl.program_id(0).to(tl.int64)
    block = tl.program_id(1)
    if MEASURE:
        if block == 0:  # the pair's squared change, its blocks' sums added in a fixed order; then the rule
            index = tl.arange(0, BLOCKS)
            total = tl.sum(tl.load(part_ptr + pair * blocks + index, mask=index < blocks, other=0.0), axis=0)
            tl.store(change_ptr + pair, total)
            if HAS_LIVE:
                tl.store(live_ptr + pair, tl.load(seen_ptr + pair) * (total > scaled_epsilon).to(tl.float32))
    area = height * width
    offs = block * BLOCK + tl.arange(0, BLOCK)
    if SKIP_FROZEN:
        inside = offs < tl.where(tl.load(seen_ptr + pair) != 0.0, area, 0)
    else:
        inside = offs < area
    x = offs % width
    has_right = inside & (x < width - 1)
    has_down = inside & (offs < area - width)
    flow = u_ptr + pair * 2 * area
    dual = p_ptr + pair * 4 * area
    for component in tl.static_range(2):
        here = flow + component * area + offs
        u = tl.load(here, mask=inside, other=0.0)
        # Forward differences; zero in the last column (x) and the last row (y), as in the reference.
        dx = tl.where(has_right, tl.load(here + 1, mask=has_right, other=0.0) - u, 0.0)
        dy = tl.where(has_down, tl.load(here + width, mask=has_down, other=0.0) - u, 0.0)
        if HAS_LIVE:  # a pair that met the stopping rule before this step keeps its duals
            live = tl.load(seen_ptr + pair)
            dx = dx * live
            dy = dy * live
        norm = 1.0 + taut * tl.sqrt(dx * dx + dy * dy)
        px = dual + 2 * component * area + offs
        py = px + area
        tl.store(px, (tl.load(px, mask=inside, other=0.0) + taut * dx) / norm, mask=inside)
        tl.store(py, (tl.load(py, mask=inside, other=0.0) + taut * dy) / norm, mask=inside)


def triton_iteration(
    u: torch.Tensor,
    p: torch.Tensor,
    g: torch.Tensor,
    warped_grad: torch.Tensor,
    rho_c: torch.Tensor,
    inv_grad: torch.Tensor,
    l_t: float,
    theta: float,
    taut: float,
    measure: bool,
    live: torch.Tensor | None = None,
    scaled_epsilon: float = 0.0,
    out: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Drop-in for torch_tvl1.tvl1_iteration (same arguments and results; `g` is unused). Two launches a
    step and no host sync, `live` flags included: the dual kernel sums each pair's change and applies the
    stopping rule to its flag. `out=u` (contiguous) updates the flow in place; with `live`, frozen pairs are
    then skipped."""
    batch, _, height, width = u.shape
    blocks = triton.cdiv(height * width, BLOCK)
    measure = measure or live is not None
    skip_frozen = out is u and live is not None
    u = u.contiguous()
    out = torch.empty_like(u) if out is None else out
    partial = torch.empty(batch, blocks, device=u.device, dtype=torch.float32) if measure else out
    change = torch.empty(batch, device=u.device, dtype=torch.float32) if measure else out
    flags = out if live is None else live  # any pointer when there are no flags
    seen = torch.empty_like(live) if live is not None else out
    grid = (batch, blocks)
    _primal_kernel[grid](u, p, warped_grad, rho_c, inv_grad, flags, seen, out, partial, height, width, blocks,
                         float(l_t), float(theta), MEASURE=measure, HAS_LIVE=live is not None, SKIP_FROZEN=skip_frozen,
                         BLOCK=BLOCK)
    _dual_kernel[grid](out, p, flags, seen, partial, change, height, width, blocks, float(taut), float(scaled_epsilon),
                       MEASURE=measure, HAS_LIVE=live is not None, SKIP_FROZEN=skip_frozen, BLOCK=BLOCK,
                       BLOCKS=triton.next_power_of_2(blocks))
    return out, change if measure else None


triton_iteration.in_place = True  # the refilled batch may pass out=u (and capture the steps in a CUDA graph)
