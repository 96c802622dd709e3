#!/usr/bin/env bash
# GPU check for the sampler (issues 5, 12): our tch CUDA sampler's three decode loops vs transformers' generate on a random
# model with the real Qwen3-4B shape, bf16, batch 256, prompt 128 tokens, 256 new tokens, the
# paper's Qwen3 sampling settings (T 0.7, top-p 0.8, top-k 20), EOS ignored on both sides.
#
#   scripts/gpu_check_sample.sh BIN [OUT_DIR]      # BIN: release build with --features cuda
#   env: PYTHON (python3)  BATCH (256)  PROMPT (128)  NEW (256)  WORK (/tmp/rlvr-qwen3-4b-random)
# Writes OUT_DIR/gpu_sample_check.json (with a per-op profile of a decode step, dynamic and
# cuda-graph, from `generate --profile-ops`: OUT_DIR/ops-*.json and Chrome traces). Needs Python torch
# + transformers on the machine.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd); BIN=$(realpath "$1"); OUT=${2:-$PWD/gpu-out}; mkdir -p "$OUT"
PY=${PYTHON:-python3}; BATCH=${BATCH:-256}; PROMPT=${PROMPT:-128}; NEW=${NEW:-256}
WORK=${WORK:-/tmp/rlvr-qwen3-4b-random}
export LD_LIBRARY_PATH="$($PY -c 'import torch,os;print(os.path.dirname(torch.__file__))')/lib:${LD_LIBRARY_PATH:-}"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader

if [ ! -f "$WORK/config.json" ]; then
  timeout 240 "$PY" "$HERE/make_qwen3_4b_random.py" "$WORK"
fi
IDS=$($PY -c "import random; random.seed(0); print(','.join(str(random.randrange(1000, 150000)) for _ in range($PROMPT)))")

# Three decode loops, same seeds: the growing window (dynamic), the fixed-shape step over slot caches
# (static) and that step captured as a CUDA graph (cuda-graph). DECODES="cuda-graph" to run one.
for d in ${DECODES:-dynamic static cuda-graph}; do
  echo "== ours: tch CUDA sampler (bf16, on-device top-k), decode $d"
  timeout 300 "$BIN" generate --model "$WORK" --input-ids "$IDS" --n "$BATCH" --max-new-tokens "$NEW" \
    --temperature 0.7 --top-p 0.8 --top-k 20 --ignore-eos --device cuda --dtype bf16 --decode "$d" \
    --out "$OUT/ours-$d.json" || echo "decode $d failed (rc $?)"
done

# Where a decode step's time goes (libtorch's profiler: CUDA kernel time and host self time per op,
# decode steps 32-39, a separate run since profiling slows the steps down): OUT/ops-<decode>.json and
# a Chrome trace beside it.
for d in ${PROFILE_DECODES:-dynamic cuda-graph}; do
  echo "== profile: decode $d, steps 32..40"
  timeout 180 "$BIN" generate --model "$WORK" --input-ids "$IDS" --n "$BATCH" --max-new-tokens 48 \
    --temperature 0.7 --top-p 0.8 --top-k 20 --ignore-eos --device cuda --dtype bf16 --decode "$d" \
    --profile-ops "$OUT/ops-$d" --profile-steps 32:40 --out /dev/null || echo "profile $d failed (rc $?)"
done

echo "== transformers generate (bf16, sampling on)"
timeout 300 "$PY" - "$WORK" "$IDS" "$BATCH" "$NEW" "$OUT/hf.json" <<'PYEOF'
import json, sys, time, torch
from transformers import AutoModelForCausalLM
work, ids, batch, new, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
m = AutoModelForCausalLM.from_pretrained(work, dtype=torch.bfloat16).cuda().eval()
x = torch.tensor([[int(t) for t in ids.split(",")]] * batch, device="cuda")
kw = dict(do_sample=True, temperature=0.7, top_p=0.8, top_k=20, max_new_tokens=new, min_new_tokens=new,
          pad_token_id=151643)
m.generate(x[:8], **{**kw, "max_new_tokens": 8, "min_new_tokens": 8})  # warm-up
torch.cuda.synchronize(); t0 = time.time()
y = m.generate(x, **kw)
torch.cuda.synchronize(); s = time.time() - t0
n = (y.shape[1] - x.shape[1]) * batch
json.dump({"seconds": s, "new_tokens": n, "tokens_per_second": n / s, "batch": batch}, open(out, "w"))
print(f"transformers: {n} tokens in {s:.1f} s ({n/s:.0f} tok/s)")
PYEOF

"$PY" - "$OUT" <<'PYEOF'
import json, sys
out = sys.argv[1]
import os
hf = json.load(open(f"{out}/hf.json"))
r = {"shape": "Qwen3-4B (random weights), bf16", "transformers_generate": hf, "ours_tch_cuda": {}}
toks = {}
for d in ["dynamic", "static", "cuda-graph"]:
    f = f"{out}/ours-{d}.json"
    if not os.path.exists(f):
        continue
    j = json.load(open(f))
    r["ours_tch_cuda"][d] = {**j["timing"], "ratio_over_transformers": j["timing"]["tokens_per_second"] / hf["tokens_per_second"],
                             "ms_per_step": 1e3 * j["timing"]["seconds"] / max(1, max(len(s["tokens"]) for s in j["samples"]))}
    toks[d] = [s["tokens"] for s in j["samples"]]
for d in ["dynamic", "static", "cuda-graph"]:
    f = f"{out}/ops-{d}.json"
    if os.path.exists(f):
        p = json.load(open(f))["summary"]
        r.setdefault("decode_step_profile", {})[d] = {
            "cuda_kernel_ms_per_step": p["device_ms_per_step"], "host_op_ms_per_step": p["host_ms_per_step"],
            "top_kernels": p["device_ops"][:12], "top_host_ops": p["host_ops"][:12]}
# bf16 kernels need not give every row the same bits across loops: report agreement, do not require it.
if "dynamic" in toks:
    r["samples_identical_to_dynamic"] = {d: sum(a == b for a, b in zip(t, toks["dynamic"])) / len(t) for d, t in toks.items()}
json.dump(r, open(f"{out}/gpu_sample_check.json", "w"), indent=1)
print(json.dumps(r, indent=1))
PYEOF
