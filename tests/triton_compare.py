"""The Triton TV-L1 step against the eager reference; run as a script, it prints the differences as JSON.

Run with TRITON_INTERPRET=1 (set before Triton is imported) the kernels execute on the CPU through
Triton's interpreter; on a CUDA machine `compare(device="cuda")` runs the compiled kernels.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import cv2
import numpy as np
import torch

from tsnpipe.stages.flow import FlowParams
from tsnpipe.stages.flow import refill, torch_tvl1
from tsnpipe.stages.flow.torch_tvl1 import tvl1_flow, tvl1_iteration
from tsnpipe.stages.flow.triton_tvl1 import triton_iteration

RUBBER_WHALE = Path(__file__).resolve().parent / "data" / "middlebury" / "RubberWhale"


def random_state(batch: int, height: int, width: int, device: str):
    """Flow, duals (zero where the reference keeps them zero), warped gradient, rho_c and 1/|grad|^2."""
    gen = torch.Generator().manual_seed(batch * 1000 + height * 10 + width)
    u = torch.randn(batch, 2, height, width, generator=gen)
    p = torch.randn(batch, 2, 2, height, width, generator=gen) * 0.2
    p[:, :, 0, :, -1] = 0
    p[:, :, 1, -1, :] = 0
    grad = torch.randn(batch, 2, height, width, generator=gen) * 8
    grad[0, :, :2, :3] = 0  # flat patch: the reference's GRAD_EPSILON path
    rho_c = torch.randn(batch, 1, height, width, generator=gen) * 4
    inv_grad = grad.square().sum(dim=1, keepdim=True).clamp(min=1.1920929e-07).reciprocal()
    return [t.to(device) for t in (u, p, grad, rho_c, inv_grad)]


def compare_steps(device: str = "cpu") -> dict:
    """Six steps of each implementation from the same state, odd sizes (partial blocks, borders). From the
    fourth step on they carry stopping flags: the middle pair of a batch of three starts frozen, the
    fifth step's epsilon is met by every pair, so the sixth changes nothing."""
    worst = {"flow": 0.0, "dual": 0.0, "change_rel": 0.0, "skipped_change_is_none": True, "frozen_moved": 0.0,
             "flags_differ": 0, "in_place_flow": 0.0, "in_place_dual": 0.0}
    for batch, height, width in ((1, 1, 1), (3, 7, 9), (1, 33, 40)):
        u, p, grad, rho_c, inv_grad = random_state(batch, height, width, device)
        ref_u, ref_p, our_u, our_p = u.clone(), p.clone(), u.clone(), p.clone()
        here_u, here_p = u.clone(), p.clone()  # in place (out=u): frozen pairs skipped, not copied
        g = torch.zeros_like(p)
        ref_live = torch.ones(batch, device=device)
        ref_live[batch // 2] = 0.0 if batch > 1 else 1.0
        our_live, here_live = ref_live.clone(), ref_live.clone()
        for step in range(6):
            measure = step % 3 == 2
            flagged = step >= 3
            epsilon = 1e9 if step == 4 else 0.0
            if step == 3:
                frozen_u, frozen_p = our_u[batch // 2].clone(), our_p[batch // 2].clone()
            args = (grad, rho_c, inv_grad, 0.045, 0.3, 0.8333, measure)
            ref_u, ref_change = tvl1_iteration(ref_u, ref_p, g, *args, ref_live if flagged else None, epsilon)
            our_u, our_change = triton_iteration(our_u, our_p, g, *args, our_live if flagged else None, epsilon)
            triton_iteration(here_u, here_p, g, *args, here_live if flagged else None, epsilon, out=here_u)
            if measure or flagged:
                rel = ((our_change - ref_change).abs() / ref_change.clamp(min=1e-6)).max().item()
                worst["change_rel"] = max(worst["change_rel"], rel)
            else:
                worst["skipped_change_is_none"] &= our_change is None
            worst["flags_differ"] += int((ref_live != our_live).sum().item())
        if batch > 1:
            moved = max((our_u[batch // 2] - frozen_u).abs().max().item(),
                        (our_p[batch // 2] - frozen_p).abs().max().item())
            worst["frozen_moved"] = max(worst["frozen_moved"], moved)
        worst["flags_differ"] += int(our_live.sum().item())  # every pair met the fifth step's epsilon
        worst["flow"] = max(worst["flow"], (our_u - ref_u).abs().max().item())
        worst["dual"] = max(worst["dual"], (our_p - ref_p).abs().max().item())
        worst["in_place_flow"] = max(worst["in_place_flow"], (here_u - ref_u).abs().max().item())
        worst["in_place_dual"] = max(worst["in_place_dual"], (here_p - ref_p).abs().max().item())
        worst["flags_differ"] += int((here_live != ref_live).sum().item())
    return worst


def compare_flow(device: str = "cpu") -> dict:
    """Whole TV-L1 on a real Middlebury crop (24x32, 2 scales) with each step; flow difference in pixels."""
    first = cv2.imread(str(RUBBER_WHALE / "frame10.png"), cv2.IMREAD_GRAYSCALE)[100:124, 200:232]
    second = cv2.imread(str(RUBBER_WHALE / "frame11.png"), cv2.IMREAD_GRAYSCALE)[100:124, 200:232]
    as_batch = lambda image: torch.from_numpy(np.ascontiguousarray(image))[None, None].float().to(device)  # noqa: E731
    params = FlowParams(backend="torch", nscales=2, warps=1, inner_iterations=6, outer_iterations=2, check_every=3)
    # A large epsilon: warps stop early, at a step the host does not look at when it looks every 3 steps.
    stopping = dataclasses.replace(params, epsilon=0.3)
    with torch.inference_mode():
        ref = tvl1_flow(as_batch(first), as_batch(second), params, tvl1_iteration)
        ours = tvl1_flow(as_batch(first), as_batch(second), params, triton_iteration)
        ref_stopped = tvl1_flow(as_batch(first), as_batch(second), stopping, tvl1_iteration)  # CPU: looks every step
        every_step = torch_tvl1.check_interval
        torch_tvl1.check_interval = lambda params, device: params.check_every  # the GPU's looks, here too
        try:
            our_stopped = tvl1_flow(as_batch(first), as_batch(second), stopping, triton_iteration)
        finally:
            torch_tvl1.check_interval = every_step
    return {"flow_max_px": (ours - ref).abs().max().item(), "flow_mean_abs_px": ref.abs().mean().item(),
            "stopped_max_px": (our_stopped - ref_stopped).abs().max().item(),
            "stopping_moved_px": (ref_stopped - ref).abs().max().item()}


def compare_refill(device: str = "cpu") -> dict:
    """Crops of two sizes through the refilled batch with the Triton step, in place (on CUDA, replayed from
    CUDA graphs), against each pair's flow computed alone with the same step; difference in pixels."""
    whale = [cv2.imread(str(RUBBER_WHALE / f"frame1{k}.png"), cv2.IMREAD_GRAYSCALE) for k in (0, 1)]
    pairs = []
    for n, (top, left, height, width) in enumerate([(100, 200, 24, 32), (120, 180, 24, 32), (60, 90, 20, 28),
                                                    (140, 300, 24, 32), (30, 40, 20, 28)]):
        first, second = (np.ascontiguousarray(image[top:top + height, left:left + width]) for image in whale)
        pairs.append((n, first, second))
    params = FlowParams(backend="torch", nscales=2, warps=2, inner_iterations=6, outer_iterations=2, check_every=3,
                        epsilon=0.05)
    as_batch = lambda image: torch.from_numpy(image)[None, None].float().to(device)  # noqa: E731
    every_step = torch_tvl1.check_interval
    refill.check_interval = lambda params, device: params.check_every  # the GPU's looks, on the CPU too
    try:
        with torch.inference_mode():
            solver = refill.RefillSolver(params, torch.device(device), batch=2, step=triton_iteration)
            flows = dict(item for finished in solver.solve(iter(pairs)) for item in finished)
            torch_tvl1.check_interval = refill.check_interval
            alone = {key: tvl1_flow(as_batch(first), as_batch(second), params, triton_iteration)[0]
                     for key, first, second in pairs}
    finally:
        refill.check_interval = torch_tvl1.check_interval = every_step
    return {"pairs": len(flows), "graphs": len(next(iter(solver.pools.values())).graphs) if solver.pools else 0,
            "refill_max_px": max((flows[key] - alone[key]).abs().max().item() for key in alone),
            "flow_mean_abs_px": float(np.mean([flow.abs().mean().item() for flow in alone.values()]))}


if __name__ == "__main__":
    device = sys.argv[1] if len(sys.argv) > 1 else "cpu"
    print(json.dumps({"steps": compare_steps(device), "flow": compare_flow(device), "refill": compare_refill(device)}))
