#!/usr/bin/env bash
# config/offline-gpu.yaml end to end through the workflow on a GPU host, timed, resumable.
#
#   bash benchmarks/offline_gpu_run.sh one [seconds]   # GPU 0 only, 16 CPU cores, gpu=4 (4 jobs share it)
#   bash benchmarks/offline_gpu_run.sh two [seconds]   # both GPUs, 32 CPU cores, gpu=8 (4 jobs per GPU)
#
# Env: WORK (run directory, default /tmp/offline-gpu-<mode>), CONFIG (default config/offline-gpu.yaml;
# benchmarks/config_slice.py writes slices of it), TARGET (default results/tables.md), EXTRA
# (more Snakemake arguments).
#
# Each call runs (or resumes) the DAG in $WORK for at most `seconds`, appends the
# segment's wall time to segments.txt there (the run's wall time is their sum), samples nvidia-smi
# every 2 s, and, when $OUT is set, packs the small outputs (tables, CSVs, plots, records, logs,
# Snakemake benchmarks; no checkpoints, exported models or tokenizers, but the dense model's
# evaluations) into $OUT/offline-gpu-<mode>.tgz.
#
# Snakemake gets SIGTERM at `seconds` and SIGKILL 20 s later (its shutdown once took 50 s and the
# device call's own limit killed the script before it logged the segment): give the call at least
# `seconds` + 40 s, plus whatever ran before this script in the same call (staging: ~80 s).
set -u
mode=${1:?one or two}
limit=${2:-560}
work=${WORK:-/tmp/offline-gpu-$mode}
mkdir -p "$work"
if [ "$mode" = one ]; then
    export CUDA_VISIBLE_DEVICES=0
    pin="taskset -c 0-15"; gpu_slots=4; cores=16
    command -v taskset > /dev/null || pin=""
else
    pin=""; gpu_slots=8; cores=32
fi
args=(-s "$PWD/Snakefile" -d "$work" --profile profiles/gpu --resources gpu=$gpu_slots --cores $cores
      --configfile "$(realpath "${CONFIG:-config/offline-gpu.yaml}")")
if [ -n "$(ls -A "$work/.snakemake/locks" 2>/dev/null)" ]; then
    python3 -m snakemake "${args[@]}" --unlock > /dev/null 2>&1
fi
nvidia-smi --query-gpu=timestamp,index,utilization.gpu,memory.used --format=csv,noheader -l 2 >> "$work/gpu-samples.csv" &
sampler=$!
start=$(date +%s.%N)
timeout -k 20 "$limit" $pin python3 -m snakemake ${TARGET:-results/tables.md} ${EXTRA:-} "${args[@]}" >> "$work/snakemake.log" 2>&1
rc=$?
end=$(date +%s.%N)
kill $sampler
seconds=$(python3 -c "print(round($end - $start, 1))")
echo "segment rc=$rc seconds=$seconds started=$(date -d @${start%.*} +%T)" | tee -a "$work/segments.txt"
python3 - "$work" <<'EOF'
import sys
from pathlib import Path
work = Path(sys.argv[1])
total = sum(float(line.split("seconds=")[1].split()[0]) for line in (work / "segments.txt").read_text().splitlines())
print(f"total wall time so far: {total:.1f} s over {len((work / 'segments.txt').read_text().splitlines())} segment(s)")
print("finished" if (work / "results" / "tables.md").exists() else "not finished")
EOF
tail -5 "$work/snakemake.log"
if [ -n "${OUT:-}" ]; then
    (cd "$work" && find results segments.txt gpu-samples.csv snakemake.log \
        \( -name '*.md' -o -name '*.csv' -o -name '*.json' -o -name '*.png' -o -name '*.svg' -o -name '*.tsv' \
           -o -name '*.log' -o -name '*.txt' \) -not -path '*/steps/*.blocks*' -not -name 'tokenizer*' \
           -not -regex 'results/[^/]*/dense/.*' -print0 \
        | tar czf "$OUT/offline-gpu-$mode.tgz" --null -T -)
fi
