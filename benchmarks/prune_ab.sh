#!/usr/bin/env bash
# The block walk of two code trees side by side on one GPU, in one call: prune_benchmark.py with
# the `icp` package of OLD (another checkout's root, e.g. the previous commit's) and of this tree.
#
#   bash benchmarks/prune_ab.sh OLD_ROOT OUT_DIR [models...]      (default model: opt-6.7b)
#
# Each tree times Wanda, SparseGPT and ICP with the streams on the GPU and ICP with the streams in
# host memory (4 blocks after an untimed warm-up block, scaled to the whole model); this tree also
# times other SparseGPT paths beside the default (NEW_PATHS, default "torch auto lazy flip"; see
# prune_benchmark.sweep_options). Files: OUT_DIR/prune_benchmark{,_offload}_{old,new}.{json,md}.
set -euo pipefail
old=$(realpath "${1:?OLD_ROOT}"); out=${2:?OUT_DIR}; shift 2
models=("${@:-opt-6.7b}")
here=$(cd "$(dirname "$0")/.." && pwd)
bench() {  # code_root tag extra-args...
    local root=$1 tag=$2; shift 2
    PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" python3 "$here/benchmarks/prune_benchmark.py" \
        --models "${models[@]}" --max-blocks 4 --out "$out" --tag "$tag" "$@" | grep -v '^{'
}
bench "$old" old --methods wanda sparsegpt icp --paths auto
read -r -a paths <<< "${NEW_PATHS:-torch auto lazy flip}"
bench "$here" new --methods wanda sparsegpt icp --paths "${paths[@]}"
bench "$old" old --methods icp --paths auto --offload
bench "$here" new --methods icp --paths ${paths[@]/torch} --offload
