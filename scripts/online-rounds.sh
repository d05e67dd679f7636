#!/usr/bin/env bash
# Iterative (on-policy) Diffusion-DPO from the command line: each round samples new candidate pairs
# from the CURRENT policy, labels them with a reward, and trains again starting from the previous
# round's weights. Per-round evaluation against the base goes to <out>/round-N/eval.
#
#   scripts/online-rounds.sh OUT ROUNDS PROMPTS HELDOUT_PROMPTS [extra train flags…]
#
# e.g. scripts/online-rounds.sh runs/online 3 train.txt heldout.txt --beta 5000 --lr 1e-3
# Environment: MODEL (default models/emoji-base), REWARD (alignment), K (4), STEPS (300), SAMPLE_STEPS (10).
set -euo pipefail
out=$1 rounds=$2 prompts=$3 heldout=$4
shift 4
model=${MODEL:-models/emoji-base}
reward=${REWARD:-alignment}
ddpo="node --import tsx $(dirname "$0")/../src/cli/main.ts"
policy=$model
for ((r = 1; r <= rounds; r++)); do
  dir=$out/round-$r
  mkdir -p "$dir"
  # 1. candidates from the current policy (round 1: the base model)
  $ddpo pairs --model "$policy" --base "$model" --prompts "$prompts" --db "$dir/pairs.sqlite" --k "${K:-4}" \
    --steps "${SAMPLE_STEPS:-10}" --sampler euler_ancestral --seed "$r"
  # 2. AI feedback
  $ddpo label --db "$dir/pairs.sqlite" --reward "$reward"
  # 3. DPO, starting from the previous round's adapters
  init=()
  [[ $r -gt 1 ]] && init=(--init-from "$out/round-$((r - 1))/train")
  $ddpo train --model "$model" --data "$dir/pairs.sqlite" --lora --steps "${STEPS:-300}" --batch 8 \
    --out "$dir/train" "${init[@]}" "$@"
  # 4. this round's policy against the base
  $ddpo eval --base "$model" --tuned "$dir/train" --prompts "$heldout" --seeds 2 --sampler euler_ancestral \
    --steps "${SAMPLE_STEPS:-10}" --reward "$reward" --out "$dir/eval" --json > "$dir/eval.json"
  policy=$dir/train
done
echo "rounds written to $out/round-*/eval.json"
