"""tsnpipe's own TV-L1 optical flow in PyTorch, batched over many pairs and the same on CPU and CUDA.

The algorithm is the duality-based TV-L1 of Zach, Pock and Bischof (2007) in the form of Sanchez,
Meinhardt-Llopis and Facciolo (IPOL 2013), laid out as OpenCV's DualTVL1 does it so the two backends
agree: a pyramid built by repeated bilinear downscaling by `scale_step` (stopping below 16 pixels;
cv::resize with fx = fy = scale_step, which samples at (x + 0.5) / scale_step - 0.5 whatever the
rounded size), zero flow at the coarsest level; at every level `warps` times: bicubic warp of the
second image and of its centred-difference gradient (zero outside, at positions rounded to 1/32 pixel
as cv::remap does), linearise the data term around the current flow, then up to `outer_iterations` x
`inner_iterations` primal-dual iterations that stop once the squared flow update summed over the
image falls below epsilon^2 * area, with a 5x5 median filter of the flow at the start of each outer
iteration. The flow is upsampled bilinearly and scaled by 1/scale_step.

Tensors are (B, C, H, W) float32; images are grey levels 0..255. The stopping rule is OpenCV's: the
update is measured after every step and a warp ends at the first step that meets it. Each pair's sum is
added in a fixed order (`fixed_order_sum`), so a pair stops at the same step alone or in any batch, and its
flow is bit for bit the same. Pairs that met it leave the batch when the host looks (every step on the
CPU, every `check_every` steps on a GPU: the only host syncs in the loop) and stay frozen until then. The
step is a parameter: `tvl1_iteration` below (eager torch, the CPU implementation and the reference) or the
fused Triton kernels of triton_tvl1 on CUDA (`iteration_for` picks).
"""

from __future__ import annotations

import warnings
from typing import Callable

import cv2
import torch
import torch.nn.functional as F

from tsnpipe.stages.flow.params import FlowParams

MIN_LEVEL_SIZE = 16
# Pixels whose squared gradient is below this carry no data term (OpenCV uses FLT_EPSILON).
GRAD_EPSILON = 1.1920929e-07
# The median filter unfolds size*size copies of the flow: this many float values (128 MB) at a time.
MEDIAN_CHUNK_VALUES = 32_000_000
# cv::remap's sub-pixel resolution: positions are rounded to 1/32 pixel.
REMAP_STEPS = 32


def pyramid_sizes(height: int, width: int, nscales: int, scale_step: float) -> list[tuple[int, int]]:
    """Level sizes, finest first; like cv::resize with fx = fy = scale_step, rounded."""
    sizes = [(height, width)]
    for _ in range(1, nscales):
        h, w = sizes[-1]
        h, w = round(h * scale_step), round(w * scale_step)
        if h < MIN_LEVEL_SIZE or w < MIN_LEVEL_SIZE:
            break
        sizes.append((h, w))
    return sizes


def _resize_taps(source: int, target: int, scale: float, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """cv::resize INTER_LINEAR along one axis: left tap, right tap and right weight of each output pixel."""
    position = ((torch.arange(target, dtype=torch.float64) + 0.5) / scale - 0.5).float()
    left = position.floor()
    weight = position - left
    left = left.long()
    outside = (left < 0) | (left >= source - 1)  # OpenCV takes the edge pixel alone there
    weight[outside] = 0.0
    left = left.clamp(0, source - 1)
    right = (left + 1).clamp(max=source - 1)
    return left.to(device), right.to(device), weight.to(device)


def downscale(images: torch.Tensor, size: tuple[int, int], scale: float) -> torch.Tensor:
    """Bilinear downscaling like cv::resize(src, dst, Size(), scale, scale, INTER_LINEAR): the sample
    positions follow `scale` itself, not the ratio of the rounded sizes (F.interpolate's mapping), which
    shifts a coarse level by up to a quarter pixel at its far edge and changes its grey levels."""
    left, right, wx = _resize_taps(images.shape[-1], size[1], scale, images.device)
    top, bottom, wy = _resize_taps(images.shape[-2], size[0], scale, images.device)
    rows = torch.lerp(images[..., left], images[..., right], wx)
    return torch.lerp(rows[..., top, :], rows[..., bottom, :], wy[:, None])


def image_pyramid(images: torch.Tensor, sizes: list[tuple[int, int]], scale: float) -> list[torch.Tensor]:
    """`images` (B, C, H, W) at every level size, finest first, each level downscaled from the one before."""
    levels = [images]
    for size in sizes[1:]:
        levels.append(downscale(levels[-1], size, scale))
    return levels


def centred_gradient(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Half central differences; one-sided half differences at the border (replicated edge)."""
    padded = F.pad(image, (1, 1, 1, 1), mode="replicate")
    dx = 0.5 * (padded[..., 1:-1, 2:] - padded[..., 1:-1, :-2])
    dy = 0.5 * (padded[..., 2:, 1:-1] - padded[..., :-2, 1:-1])
    return dx, dy


def median_filter(flow: torch.Tensor, size: int) -> torch.Tensor:
    """Median over size x size windows with replicated borders, like cv::medianBlur on float images.

    On the CPU it is cv::medianBlur itself (about a hundred times faster than unfolding the windows);
    elsewhere `median_unfolded`.
    """
    if size <= 1:
        return flow
    if flow.device.type != "cpu":
        return median_unfolded(flow, size)
    out = torch.empty_like(flow)
    source, target = flow.contiguous().numpy(), out.numpy()
    for pair in range(flow.shape[0]):
        for component in range(flow.shape[1]):
            target[pair, component] = cv2.medianBlur(source[pair, component], size)
    return out


def median_unfolded(flow: torch.Tensor, size: int) -> torch.Tensor:
    """cv::medianBlur's result on any device: the size x size windows unfolded (in chunks), their medians."""
    b, c, h, w = flow.shape
    r = size // 2
    out = torch.empty_like(flow)
    step = max(1, MEDIAN_CHUNK_VALUES // (c * h * w * size * size))
    for start in range(0, b, step):
        chunk = F.pad(flow[start : start + step], (r, r, r, r), mode="replicate")
        windows = chunk.unfold(2, size, 1).unfold(3, size, 1)  # (b, c, h, w, size, size)
        out[start : start + step] = windows.reshape(*windows.shape[:4], size * size).median(dim=-1).values
    return out


def warp_bicubic(stack: torch.Tensor, flow: torch.Tensor, base_grid: torch.Tensor) -> torch.Tensor:
    """Sample every channel of `stack` at x + flow (bicubic, zero outside), like cv::remap INTER_CUBIC.

    cv::remap rounds each position to 1/32 pixel (INTER_TAB_SIZE) before it weighs the taps; so do we.
    """
    h, w = stack.shape[-2:]
    position = (base_grid + flow.permute(0, 2, 3, 1)).mul_(REMAP_STEPS).round_().div_(REMAP_STEPS)
    # x and y scaled apart by Python numbers: a scale tensor made from a list would be a copy that waits for the GPU
    position[..., 0].mul_(2.0 / max(w - 1, 1))
    position[..., 1].mul_(2.0 / max(h - 1, 1))
    grid = position.sub_(1.0)
    return F.grid_sample(stack, grid, mode="bicubic", padding_mode="zeros", align_corners=True)


def pixel_grid(height: int, width: int, device: torch.device) -> torch.Tensor:
    """(1, H, W, 2) pixel coordinates (x, y)."""
    ys, xs = torch.meshgrid(
        torch.arange(height, device=device, dtype=torch.float32),
        torch.arange(width, device=device, dtype=torch.float32),
        indexing="ij",
    )
    return torch.stack((xs, ys), dim=-1).unsqueeze(0)


def tvl1_iteration(
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
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One primal-dual step for a batch; returns the new flow and, when `measure`, each pair's squared update.

    u, warped_grad: (B, 2, H, W) flow (x, y) and warped image gradient (x, y); rho_c, inv_grad:
    (B, 1, H, W); p: (B, 2, 2, H, W) dual variables [flow component, direction], updated in place;
    g: a (B, 2, 2, H, W) buffer for the flow's forward gradient whose last column (x) and last
    row (y) stay zero. live: None, or (B,) float, 1 for a pair still iterating and 0 for one that met
    the stopping rule: its flow and duals stay as they are (its update is zeroed). Given `live`, the
    step measures and sets to 0 the flag of each pair whose squared update is at most `scaled_epsilon`.
    """
    measure = measure or live is not None
    scale = None if live is None else live.view(-1, 1, 1, 1)
    # Thresholding step (TH): the pointwise minimiser of the linearised data term, clamped at +-l_t.
    rho = torch.addcmul(rho_c, warped_grad[:, :1], u[:, :1]).addcmul_(warped_grad[:, 1:], u[:, 1:])
    coef = rho.mul_(inv_grad).clamp_(-l_t, l_t)
    # u = v + theta * div(p) = u + delta, with backward differences for div and zero outside.
    px, py = p[:, :, 0], p[:, :, 1]
    delta = torch.mul(px, theta)
    delta[..., :, 1:].sub_(px[..., :, :-1], alpha=theta)
    delta.add_(py, alpha=theta)
    delta[..., 1:, :].sub_(py[..., :-1, :], alpha=theta)
    delta.addcmul_(coef, warped_grad, value=-1.0)
    if scale is not None:
        delta.mul_(scale)
    u_new = u + delta
    change = fixed_order_sum(delta.square().view(len(delta), -1)) if measure else None
    # Dual step: p = (p + taut * grad u) / (1 + taut * |grad u|), per flow component.
    torch.sub(u_new[..., :, 1:], u_new[..., :, :-1], out=g[:, :, 0, :, :-1])
    torch.sub(u_new[..., 1:, :], u_new[..., :-1, :], out=g[:, :, 1, :-1, :])
    if scale is not None:
        g.mul_(scale.unsqueeze(-1))
    gx, gy = g[:, :, 0], g[:, :, 1]
    norm = torch.addcmul(gx * gx, gy, gy).sqrt_().mul_(taut).add_(1.0).unsqueeze(2)  # torch.hypot is 4x slower
    p.add_(g, alpha=taut).div_(norm)
    if live is not None:
        live.mul_(change > scaled_epsilon)
    return u_new, change


@torch.compiler.disable  # its loop runs on the row's length: compiled, every level size would be a new graph
def fixed_order_sum(values: torch.Tensor) -> torch.Tensor:
    """Each row's sum, (B, N) -> (B,), added in an order fixed by N alone: the row's second half is added onto
    its first (an odd last value onto the first), again and again, as a tree. Only elementwise additions, so a
    pair's stopping sum alone and inside a batch are bit for bit the same; a matrix product or torch.sum may
    split and order the work by the batch's shape and the threads, which moves the last bits."""
    sums = values
    while sums.shape[-1] > 1:
        count = sums.shape[-1]
        half = count // 2
        folded = sums[..., :half] + sums[..., half:2 * half]
        if count % 2:
            folded[..., :1] += sums[..., 2 * half:]
        sums = folded
    return sums[..., 0]


def check_interval(params: FlowParams, device: torch.device | str) -> int:
    """How many steps run between the host's looks at the stopping rule: every step on the CPU, where a
    look costs nothing; `check_every` elsewhere, where each look waits for the device. The rule itself is
    met at the same step either way: between looks a pair that met it is frozen (`live` at 0)."""
    return 1 if torch.device(device).type == "cpu" else params.check_every


def solve_level(
    i0: torch.Tensor,
    i1: torch.Tensor,
    u: torch.Tensor,
    params: FlowParams,
    step: Callable = tvl1_iteration,
) -> torch.Tensor:
    """TV-L1 at one pyramid level for a batch, starting from flow `u`; returns the refined flow."""
    b, _, h, w = i0.shape
    base = pixel_grid(h, w, i0.device)
    i1x, i1y = centred_gradient(i1)
    stack = torch.cat((i1, i1x, i1y), dim=1)
    scaled_epsilon = params.epsilon**2 * h * w
    l_t = params.lambda_ * params.theta
    taut = params.tau / params.theta
    every = check_interval(params, u.device)
    p = torch.zeros(b, 2, 2, h, w, device=u.device)  # kept across warps, as OpenCV does
    last_inner = params.inner_iterations - 1
    for _ in range(params.warps):
        warped = warp_bicubic(stack, u, base)
        warped_grad = warped[:, 1:].contiguous()
        rho_c = warped[:, :1] - (warped_grad * u).sum(dim=1, keepdim=True) - i0
        inv_grad = warped_grad.square().sum(dim=1, keepdim=True).clamp_(min=GRAD_EPSILON).reciprocal_()
        # The pairs still iterating; the finished ones are written back and leave the batch.
        active = torch.arange(b, device=u.device)
        ua, pa, ga, ra, iga = u, p, warped_grad, rho_c, inv_grad
        live = torch.ones(b, device=u.device) if every > 1 else None
        g = torch.zeros_like(p)
        for _ in range(params.outer_iterations):
            ua = median_filter(ua, params.median_filtering)
            for inner in range(params.inner_iterations):
                # OpenCV measures the update after every step and stops the warp once it is small enough.
                ua, change = step(ua, pa, g, ga, ra, iga, l_t, params.theta, taut, True, live, scaled_epsilon)
                if (inner + 1) % every and inner != last_inner:
                    continue
                done = (change <= scaled_epsilon if live is None else live == 0).cpu()
                if not done.any():
                    continue
                done_here = done.to(ua.device)
                finished = active[done_here]
                u = u.index_copy(0, finished, ua[done_here])
                p = p.index_copy(0, finished, pa[done_here])
                keep = ~done_here
                if not keep.any():
                    break
                active = active[keep]
                ua, pa, ga, ra, iga, g = ua[keep], pa[keep], ga[keep], ra[keep], iga[keep], g[keep]
                live = None if live is None else live[keep]
            else:
                continue
            break
        else:
            u = u.index_copy(0, active, ua)
            p = p.index_copy(0, active, pa)
    return u


def tvl1_flow(
    i0: torch.Tensor, i1: torch.Tensor, params: FlowParams, step: Callable = tvl1_iteration
) -> torch.Tensor:
    """Flow from i0 to i1 for a batch: (B, 1, H, W) grey 0..255 in, (B, 2, H, W) pixels (x, y) out."""
    sizes = pyramid_sizes(i0.shape[-2], i0.shape[-1], params.nscales, params.scale_step)
    pyramid = image_pyramid(torch.cat((i0, i1), dim=1).float(), sizes, params.scale_step)
    u = torch.zeros(i0.shape[0], 2, *sizes[-1], device=i0.device, dtype=torch.float32)
    for level in range(len(sizes) - 1, -1, -1):
        pair = pyramid[level]
        u = solve_level(pair[:, :1].contiguous(), pair[:, 1:].contiguous(), u, params, step)
        if level > 0:
            u = F.interpolate(u, size=sizes[level - 1], mode="bilinear", align_corners=False)
            u.mul_(1.0 / params.scale_step)
    return u


def iteration_for(device: torch.device | str) -> Callable:
    """The step a device runs: the fused Triton kernels on CUDA, this module's eager reference elsewhere."""
    if torch.device(device).type == "cuda":
        try:
            from tsnpipe.stages.flow.triton_tvl1 import triton_iteration
        except ImportError:  # torch's CUDA wheels bring Triton on Linux; elsewhere it may be missing
            warnings.warn("Triton is not installed, so the GPU flow runs the slower eager torch step; "
                          "`pip install triton` for the fused kernels.", stacklevel=2)
            return tvl1_iteration
        return triton_iteration
    return tvl1_iteration


def compiled_iteration() -> Callable:
    """tvl1_iteration compiled by torch.compile (dynamic shapes: the batch shrinks, levels vary)."""
    return torch.compile(tvl1_iteration, dynamic=True)
