#!/bin/bash
# Session 19's screen of test-time adaptation (docs/TRAINING.md), before ppd.train.adapt existed:
# for each of the 5 seeded val references of a dataset, its 8 dihedral views are written as a plain
# images/ + masks/ folder (benchmarks/adapt_views.py), the cross-domain twin is fine-tuned on them with
# `ppd train` (the CLI, bf16 decodes), and `ppd eval --reference R --limit 20` scores fm-ppd with the
# twin and with the fine-tuned agent on the same 20 val targets (one start set, no votes).
# Usage: benchmarks/adapt_screen.sh DATASET DECODES TAG "EXTRA ppd train FLAGS" WORKDIR
set -e
DS=$1; DEC=$2; TAG=$3; EXTRA=$4; W=${5:-/tmp/adapt_screen}
mkdir -p "$W/runs" "$W/ev"
.venv/bin/python benchmarks/adapt_views.py "$DS" "$W/views" > "$W/refs_$DS.txt"
for R in $(cat "$W/refs_$DS.txt"); do
  RUN=$W/runs/${TAG}_${DS}_$R
  [ -f "$RUN/defender.safetensors" ] || .venv/bin/ppd train --data "$W/views/$DS/$R" --out "$RUN" \
      --init docs/training/ship7x --eps-start 0.3 --fm-cycle --decodes "$DEC" --minutes 5 $EXTRA > "$RUN.log" 2>&1
  [ -f "$W/ev/base_${DS}_$R/summary.csv" ] || .venv/bin/ppd eval --split val --dataset "$DS" --reference "$R" \
      --limit 20 --methods fm-kmeans,fm-ppd --defender docs/training/ship7x/defender --defender-opt select=iou \
      --out "$W/ev/base_${DS}_$R" > /dev/null 2>&1
  .venv/bin/ppd eval --split val --dataset "$DS" --reference "$R" --limit 20 --methods fm-ppd \
      --defender "$RUN/defender" --defender-opt select=iou --out "$W/ev/${TAG}_${DS}_$R" > /dev/null 2>&1
  echo "$R done $(date +%T)"
done
