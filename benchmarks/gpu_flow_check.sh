#!/usr/bin/env bash
# The flow stage's GPU check in one command, on a CUDA machine (written for one H100/H200 with 16 cores):
#   bash benchmarks/gpu_flow_check.sh [RESULTS_DIR]
# 1. the Triton kernels against the eager reference on the GPU (tests/test_flow_triton.py);
# 2. benchmarks/flow.py at 340x256: kernel pairs/s, steps and active pairs for batches 16/64/128/256 (refilled)
#    and 128 (fixed), extract-flow end to end on >= 2,000 pairs, Middlebury EPE; JSON in RESULTS_DIR/flow_gpu.json.
# tsnpipe is installed without its dependencies into /tmp/tsnpipe-site, from this tree (or, where it cannot be
# built there, from a wheel made here with `pip wheel --no-deps -w .whl .`). A machine without package access
# brings the dependencies it lacks as wheels in .whl/, installed there first: ffmpeg-python and its `future`
# (the CLI imports them), lmdb and lz4 (the stores), and imageio-ffmpeg only where there is no ffmpeg and the frames are
# to be cut there (its wheel is 68 MB; `benchmarks/flow.py --prepare-e2e` cuts them beforehand instead).
# Fetch them where pip works, for the GPU machine's Python (3.12 on the H200 image):
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 -d .whl ffmpeg-python==0.2.0 future lmdb lz4
# About 3-6 minutes on one H200.
set -uo pipefail
results=${1:-${OUT:-.}}
mkdir -p "$results"
source benchmarks/gpu_site.sh  # tsnpipe and the wheels it lacks, into /tmp/tsnpipe-site on PYTHONPATH
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$results/gpu.txt"
"$python" -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, 'gpus', torch.cuda.device_count())" \
    | tee -a "$results/gpu.txt"
# -p no:cacheprovider: the working tree may be read-only there. A failing test does not stop the benchmark.
timeout "${FLOW_TEST_LIMIT:-240}" "$python" -m pytest -p no:cacheprovider -q tests/test_flow_triton.py -k cuda 2>&1 | tee "$results/triton_test.txt"
# Without ffmpeg there, the end-to-end frames come from `benchmarks/flow.py --prepare-e2e .bench/flow_frames`.
e2e=()
if [ -d "${E2E_WORKDIR:-.bench/flow_frames}" ]; then
    e2e=(--e2e-workdir "${E2E_WORKDIR:-.bench/flow_frames}")
fi
timeout "${FLOW_BENCH_LIMIT:-420}" "$python" benchmarks/flow.py --skip-cpu --kernel-pairs 512 --e2e-pairs 2000 "${e2e[@]}" \
    | tee "$results/flow_gpu.json"
