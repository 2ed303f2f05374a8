#!/usr/bin/env bash
# Every GPU figure of flow, training and test in one command, within one 10-minute call on one H100/H200:
#   bash benchmarks/gpu_check.sh [RESULTS_DIR]
# Sections (each under its own time limit, each writing its own file, so a slow one loses only itself; the
# benchmarks also print each figure on stderr, into FILE.err or flow.log, as soon as it is measured):
#   1. flow: benchmarks/gpu_flow_check.sh (Triton vs eager on the GPU, kernel and end-to-end pairs/s, EPE);
#   2. the CUDA tests of the training transforms and of --gpu-decode (GPU tensors equal CPU tensors);
#   3. TSN training and test throughput, rgb and flow, ResNet-50, 8 segments, 224, batch 32, bf16, with the
#      bf16- and fp16-vs-fp32 test score checks (train_tsn.json); the same with --gpu-decode (train_gpu_decode.json);
#   4. R(2+1)D-18 clips (train_r2plus1d.json).
# Sections run in that order, so a call cut short loses the last ones.
# The GPU image has no ffmpeg: make the pictures here first (about 75 MB, 20 MB as .tar.xz: the flow frames are
# copies of the same clips) and carry .bench/ with the wheels that gpu_flow_check.sh names (lmdb too, for the
# stores; the imageio-ffmpeg wheel is not needed):
#   python benchmarks/train_throughput.py --prepare .bench/train_samples
#   python benchmarks/flow.py --prepare-e2e .bench/flow_frames
#   (cd tests && python train_workdir.py ../.bench/test_samples)    # the tests' workdir (TSNPIPE_TEST_WORKDIR)
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

export TSNPIPE_TEST_WORKDIR=${TSNPIPE_TEST_WORKDIR:-$PWD/.bench/test_samples}
FLOW_TEST_LIMIT=90 FLOW_BENCH_LIMIT=150 bash benchmarks/gpu_flow_check.sh "$results" >"$results/flow.log" 2>&1
echo "flow: exit $?" | tee -a "$results/sections.txt"
section cuda_tests.txt 60 "$python" -m pytest -p no:cacheprovider -q tests/test_transforms.py tests/test_train.py \
    tests/test_gpu_decode.py -k "gpu or cuda or nvjpeg"
section train_tsn.json 150 "$python" benchmarks/train_throughput.py --workdir "$pictures"
section train_gpu_decode.json 90 "$python" benchmarks/train_throughput.py --workdir "$pictures" --gpu-decode --test-videos 64
section train_r2plus1d.json 60 "$python" benchmarks/train_throughput.py --workdir "$pictures" --arch r2plus1d_18 \
    --test-snippets 10 --test-crops 3 --test-videos 32
