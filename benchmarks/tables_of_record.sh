#!/usr/bin/env bash
# Re-run the accuracy tables of record that depend on the shipped default model, after `make default-model`
# (benchmarks/README.md, "Retrieval, zero-shot and the HSENet ablation" and "Intra-scan localisation"):
#   (a) synthetic valid split of the default model's own dataset: retrieval, zero-shot, localisation
#   (b) semi-real set (800 real reports + label-conditioned volumes): the default model fine-tuned on its
#       640 train scans (stage 1, then stage 2 keeping the 2E3 tower), retrieval and zero-shot
#   (c) the HSENet ablation on a fresh held-out synthetic set
#   (d) drafting: bench generation on a fresh synthetic set and on the semi-real set, both indexed with the
#       shipped model (LLM rows on 50 scans; the previous composer as `--composer sections`)
# Usage: bash benchmarks/tables_of_record.sh [DEFAULT_MODEL_WORK_DIR]   (default runs/default-model)
# Each step is skipped when its output exists (delete runs/record/... to redo it); results go to
# benchmarks/results/ with the machine and load recorded.
set -euo pipefail
cd "$(dirname "$0")/.."
HS=${HS:-.venv/bin/hsenet-search}
PY=${PY:-.venv/bin/python}
DEF=${1:-runs/default-model}
W=runs/record
R=benchmarks/results
CSV=../shared/data/ct-rate-manual-labels/train.csv
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
mkdir -p "$W"

# (a) synthetic valid split, the shipped model
[ -f "$W/synth-index/manifest.json" ] || $HS index build "$DEF/data" --out "$W/synth-index"
$HS bench retrieval --index "$W/synth-index" --out "$R/retrieval_synthetic" --overwrite
$HS bench zeroshot --index "$W/synth-index" --out "$R/zeroshot_synthetic" --overwrite
$HS bench localisation --data "$DEF/data" --out "$R/localisation_default_model" --overwrite

# (d) drafting (the semi-real data is made here when (b) has not run yet)
S=$W/semireal
G=$W/gen-synth
[ -d "$S/data/radiology_text_reports" ] || \
  $HS data synth --n 800 --seed 21 --valid-fraction 0.2 --labels-from "$CSV" --reports-from "$CSV" --out "$S/data"
[ -d "$G/data/radiology_text_reports" ] || $HS data synth --n 600 --seed 100 --valid-fraction 0.1 --out "$G/data"
[ -f "$G/index/manifest.json" ] || $HS index build "$G/data" --out "$G/index"
[ -f "$S/shipped-index/manifest.json" ] || $HS index build "$S/data" --out "$S/shipped-index"
for set in synthetic semireal; do
  if [ $set = synthetic ]; then idx=$G/index data=$G/data; else idx=$S/shipped-index data=$S/data; fi
  $HS bench generation --index "$idx" --data "$data" --mode nearest --mode vote --mode grounded --mode llm \
    --llm-limit 50 --out "$R/generation_$set" --overwrite
  $HS bench generation --index "$idx" --data "$data" --mode grounded --composer sections \
    --out "$R/generation_${set}_sections" --overwrite
done

# (b) semi-real set: fine-tune the shipped model on the train split only
[ -f "$S/stage1/model.safetensors" ] || \
  $HS train --data "$S/data" --out "$S/stage1" --stage 1 --init hsenet_search/models/default --epochs 6 \
    --batch-size 32 --lr 3e-4 --prompt-loss pair --prompt-loss-weight 1.0
[ -f "$S/model/model.safetensors" ] || \
  $HS train --data "$S/data" --out "$S/model" --stage 2 --init "$S/stage1" --keep-stage2 --epochs 3 \
    --batch-size 32 --lr 3e-4 --prompt-loss pair --prompt-loss-weight 1.0
[ -f "$S/index/manifest.json" ] || $HS index build "$S/data" --out "$S/index" --model "$S/model"
$HS bench retrieval --index "$S/index" --out "$R/retrieval_semireal" --overwrite
$HS bench zeroshot --index "$S/index" --out "$R/zeroshot_semireal" --overwrite

# (c) the HSENet ablation (global ViT / 2E3 / fusion) on a fresh held-out set
$PY benchmarks/bench_ablation.py --n 250
