#!/usr/bin/env bash
# extract-features on one GPU (written for one H100/H200 with 16 cores), in one command:
#   bash benchmarks/gpu_features_check.sh [RESULTS_DIR]
# ResNet-50 RGB snippets/s at 224, --layer pool, batch 512, fp16 (the default on a GPU) then bf16: the model alone
# and the whole stage from JPEG folders (goal: >= 2,000 snippets/s end to end, >= 0.9 of the model alone); JSON in
# RESULTS_DIR/features_gpu.json and features_gpu_bf16.json. The GPU image has no ffmpeg: cut the frames here first and carry .bench/
# (about 7 MB; the run links 200 copies of them):
#   python benchmarks/features.py --prepare .bench/feature_frames
# tsnpipe and the wheels it lacks there are installed as benchmarks/gpu_flow_check.sh says. About 4 minutes.
set -uo pipefail
results=${1:-${OUT:-.}}
mkdir -p "$results"
source benchmarks/gpu_site.sh  # tsnpipe and the wheels it lacks, into /tmp/tsnpipe-site on PYTHONPATH
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$results/gpu.txt"
timeout 300 "$python" benchmarks/features.py --workdir "${FEATURE_FRAMES:-.bench/feature_frames}" --device cuda \
    --copies 200 --interval 0.2 --batch 512 --seconds 15 >"$results/features_gpu.json" 2>"$results/features_gpu.err"
echo "features_gpu.json: exit $?" | tee -a "$results/sections.txt"
cat "$results/features_gpu.json"
timeout 300 "$python" benchmarks/features.py --workdir "${FEATURE_FRAMES:-.bench/feature_frames}" --device cuda \
    --copies 200 --interval 0.2 --batch 512 --seconds 15 --precision bf16 \
    >"$results/features_gpu_bf16.json" 2>"$results/features_gpu_bf16.err"
echo "features_gpu_bf16.json: exit $?" | tee -a "$results/sections.txt"
cat "$results/features_gpu_bf16.json"
