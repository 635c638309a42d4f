#!/usr/bin/env bash
# The documented commands for the shared DAVIS evaluation runs (see docs/results_eval.md).
#
#   scripts/eval_davis.sh [DAVIS_ROOT] [MODEL] [OUT_DIR]
#
# DAVIS_ROOT defaults to /work/shared/data/davis (the 3-sequence sample), MODEL to "classic"
# (the offline GrabCut engine, no weights needed). Writes CSV/JSON under OUT_DIR.
set -euo pipefail

DATA="${1:-/work/shared/data/davis}"
MODEL="${2:-classic}"
OUT="${3:-samkit_eval}"

# `samkit eval` once the sub-app is registered in samkit/cli/main.py; the module directly otherwise
if command -v samkit >/dev/null 2>&1 && samkit eval --help >/dev/null 2>&1; then
  EVAL=(samkit eval)
else
  EVAL=(python -c "from samkit.cli.eval_cmd import app; app()")
fi

# Interactive protocol on every 10th frame, all objects: mIoU@box, mIoU@centre point,
# mIoU after 1/3/5 clicks (RITM clicks), NoC@85 / NoC@90 with at most 20 clicks.
"${EVAL[@]}" interactive --data "$DATA" --model "$MODEL" --every 10 --max-clicks 20 --clicks 1,3,5 \
  --out "$OUT/interactive-$MODEL"

# Semi-supervised VOS J&F (DAVIS-2017 protocol); needs samkit.video.VideoTracker for MODEL.
if [[ "${SKIP_VOS:-0}" != "1" ]]; then
  "${EVAL[@]}" vos --data "$DATA" --model "$MODEL" --out "$OUT/vos-$MODEL" || \
    echo "vos evaluation failed (see the message above)" >&2
fi
