#!/usr/bin/env bash
# Every GPU figure of flow, training and test in one command, within one 10-minute call on one H100/H200:
#   bash benchmarks/gpu_check.sh [RESULTS_DIR]
# Sections (each under its own time limit, each writing its own file, so a slow one loses only itself; the
# benchmarks also print each figure on stderr, into FILE.err or flow.log, as soon as it is measured):
#   1. flow: benchmarks/gpu_flow_check.sh (Triton vs eager on the GPU, kernel and end-to-end pairs/s, EPE);
#   2. TSN training and test throughput, rgb and flow, ResNet-50, 8 segments, 224, batch 32, bf16, with the
#      bf16-vs-fp32 test score check (train_tsn.json); the same with --gpu-decode (train_gpu_decode.json);
#   3. R(2+1)D-18 clips (train_r2plus1d.json);
#   4. the CUDA tests of the training transforms (GPU tensors equal CPU tensors).
# The GPU image has no ffmpeg: make the pictures here first (about 60 MB) and carry .bench/ with the
# wheels that gpu_flow_check.sh names (lmdb too, for the stores; the imageio-ffmpeg wheel is not needed):
#   python benchmarks/train_throughput.py --prepare .bench/train_samples
#   python benchmarks/flow.py --prepare-e2e .bench/flow_frames
set -uo pipefail
results=${1:-${OUT:-.}}
mkdir -p "$results"
python=${PYTHON:-python3}
pictures=${PICTURES:-.bench/train_samples}
site=/tmp/tsnpipe-site
export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

section() {  # FILE LIMIT_S COMMAND...: run one section under a time limit, stdout to RESULTS_DIR/FILE
    local file=$1 limit=$2
    shift 2
    local start=$SECONDS
    timeout "$limit" "$@" >"$results/$file" 2>"$results/${file%.*}.err"
    echo "$file: exit $? in $((SECONDS - start)) s" | tee -a "$results/sections.txt"
}

FLOW_TEST_LIMIT=90 FLOW_BENCH_LIMIT=210 bash benchmarks/gpu_flow_check.sh "$results" >"$results/flow.log" 2>&1
echo "flow: exit $?" | tee -a "$results/sections.txt"
section train_tsn.json 120 "$python" benchmarks/train_throughput.py --workdir "$pictures"
section train_gpu_decode.json 60 "$python" benchmarks/train_throughput.py --workdir "$pictures" --gpu-decode --test-videos 16
section train_r2plus1d.json 60 "$python" benchmarks/train_throughput.py --workdir "$pictures" --arch r2plus1d_18 \
    --test-snippets 10 --test-crops 3 --test-videos 32
section cuda_tests.txt 50 "$python" -m pytest -p no:cacheprovider -q tests/test_transforms.py tests/test_train.py \
    tests/test_gpu_decode.py -k "gpu or cuda or nvjpeg"
