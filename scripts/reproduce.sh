#!/usr/bin/env bash
# The embedded reproduction, stage by stage, into results/$RUN/. Each stage reads the previous
# stage's files, so any stage can be rerun alone with the same command.
#
# Today it runs the stages that exist: data → prompts → verify → pass@k, on real data (the
# reference solutions of MATH-500 and MATH test scored by our verifier against the gold answers, a
# check of the verifier and of the data). The model, training, export and sampling stages join as
# they land (see README: Stages).
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${RUN:-mini}
BIN=${BIN:-target/release/rlvr-decomp}
OUT=results/$RUN
PY=.venv/bin/python
mkdir -p "$OUT/data" "$OUT/eval"

echo ">> [data] load every dataset, check counts, prompt token lengths"
"$BIN" datasets --template qwen2.5-math --template qwen3 --out "$OUT/data/datasets.json"

echo ">> [prompt] MATH-500 #0 with the Qwen3 template"
"$BIN" prompt --dataset math500 --template qwen3 --index 0 > "$OUT/data/prompt_math500_0_qwen3.txt"

for ds in math500 math-test; do
  echo ">> [verify] $ds: reference solutions vs gold answers"
  "$BIN" datasets --dataset "$ds" --dump "$OUT/data/$ds.jsonl" > /dev/null
  # One verification case per problem: the reference solution is the "response".
  $PY - "$OUT/data/$ds.jsonl" "$OUT/eval/$ds.reference_cases.jsonl" <<'PYEOF'
import json, sys
with open(sys.argv[1]) as src, open(sys.argv[2], "w") as dst:
    for line in src:
        p = json.loads(line)
        dst.write(json.dumps({"problem_id": p["id"], "gold": p["answer"], "response": p["solution"]}) + "\n")
PYEOF
  "$BIN" verify --input "$OUT/eval/$ds.reference_cases.jsonl" --output "$OUT/eval/$ds.reference_verdicts.jsonl" \
    --stats-json "$OUT/eval/$ds.reference_verify_stats.json"
  echo ">> [pass@k] $ds reference solutions (n = 1)"
  "$BIN" passk --input "$OUT/eval/$ds.reference_verdicts.jsonl" --k 1 --out "$OUT/eval/$ds.reference_passk.json"
done

echo
echo "Outputs in $OUT/:"
find "$OUT" -type f | sort | sed 's/^/  /'
