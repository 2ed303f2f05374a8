"""The fused Triton TV-L1 step equals the eager torch reference: through Triton's interpreter on the CPU
(in a subprocess, since TRITON_INTERPRET must be set before Triton is imported), and compiled on CUDA. Without
a GPU, Triton's compiler still builds the kernels for an H100/H200, which the interpreter never does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).resolve().parent


def check(result: dict) -> None:
    steps, flow = result["steps"], result["flow"]
    assert steps["flow"] < 1e-5 and steps["dual"] < 1e-5, steps
    assert steps["in_place_flow"] < 1e-5 and steps["in_place_dual"] < 1e-5, steps
    assert steps["change_rel"] < 1e-4 and steps["skipped_change_is_none"], steps
    assert steps["frozen_moved"] == 0.0, "a pair that met the stopping rule must keep its flow and duals"
    assert steps["flags_differ"] == 0, "the kernels must apply the stopping rule to the flags as the reference does"
    assert flow["flow_mean_abs_px"] > 0.05, "the crop shows no motion, the comparison would prove nothing"
    assert flow["flow_max_px"] < 1e-3, flow
    # Looking at the stopping rule every 3 steps (frozen pairs in between) stops where looking every step does.
    assert flow["stopping_moved_px"] > 0.05, "the stopping rule never met: the comparison would prove nothing"
    assert flow["stopped_max_px"] < 1e-3, flow
    refill = result["refill"]
    assert refill["pairs"] == 5 and refill["flow_mean_abs_px"] > 0.05, refill
    assert refill["refill_max_px"] < 1e-4, refill  # slots, compaction and (on CUDA) graphs change nothing


def test_triton_step_matches_eager_reference_in_the_interpreter():
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    done = subprocess.run([sys.executable, str(HERE / "triton_compare.py"), "cpu"], capture_output=True, text=True,
                          env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    check(json.loads(done.stdout.strip().splitlines()[-1]))


def test_kernels_compile_for_hopper_without_a_gpu(tmp_path):
    """The interpreter never compiles the kernels; Triton's compiler and ptxas do, for sm_90 (H100/H200), every
    variant the step launches. A fresh cache directory makes it compile rather than read an earlier build."""
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    done = subprocess.run([sys.executable, str(HERE / "triton_build.py"), "90"], capture_output=True, text=True,
                          env={**env, "TRITON_CACHE_DIR": str(tmp_path)}, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    sizes = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(sizes) == 8 and min(sizes.values()) > 10_000, sizes


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_triton_step_matches_eager_reference_on_cuda():
    sys.path.insert(0, str(HERE))
    from triton_compare import compare_flow, compare_refill, compare_steps

    result = {"steps": compare_steps("cuda"), "flow": compare_flow("cuda"), "refill": compare_refill("cuda")}
    check(result)
    assert result["refill"]["graphs"] >= 1, "on CUDA the refilled batch replays its rounds from CUDA graphs"


def test_cuda_runs_the_fused_step_and_the_cpu_the_reference():
    from tsnpipe.stages.flow.torch_tvl1 import iteration_for, tvl1_iteration

    assert iteration_for("cpu") is tvl1_iteration
    assert iteration_for("cuda").__name__ == "triton_iteration"
