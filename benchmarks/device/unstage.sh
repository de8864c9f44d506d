#!/usr/bin/env bash
# The device side of stage.sh: each call that carries a part (`carry: [".stageK"]`) runs
#
#   bash benchmarks/device/unstage.sh K N SHA16 [SITE]
#
# which keeps part K in $STAGE_DIR (/tmp/stage); once all N parts are there it joins them, checks the
# first 16 hex digits of their SHA-256 (stage.sh printed them), unpacks the files under $UNSTAGE_DIR
# (/tmp/unstaged; same paths as here, below /) and installs every wheel among them into SITE (default /tmp/site) with
# pip --no-index --no-deps. Then: export PYTHONPATH=$PWD:/tmp/site. Exits 0 with a note while parts
# are still missing; 1 if the joined parts do not match.
set -euo pipefail
k=${1:?part number}; n=${2:?number of parts}; want=${3:?first 16 hex digits of the SHA-256}; site=${4:-/tmp/site}
stage=${STAGE_DIR:-/tmp/stage}; unstaged=${UNSTAGE_DIR:-/tmp/unstaged}
mkdir -p "$stage"
cp ".stage$k"/part* "$stage"/
have=$(find "$stage" -name 'part*' | wc -l)
if [ "$have" -lt "$n" ]; then
    echo "unstage: $have of $n parts in $stage"
    exit 0
fi
got=$(cat "$stage"/part* | sha256sum | cut -c1-16)
if [ "$got" != "$want" ]; then
    echo "unstage: the joined parts' SHA-256 starts $got, not $want" >&2
    exit 1
fi
mkdir -p "$unstaged"
cat "$stage"/part* | tar x -C "$unstaged"
wheels=$(find "$unstaged" -type f -name '*.whl')  # files only: the staged folder itself may be called .whl
if [ -n "$wheels" ]; then
    # shellcheck disable=SC2086
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" $wheels
fi
echo "unstage: $n parts joined ($got), $(echo "$wheels" | grep -c . || true) wheels installed into $site"
