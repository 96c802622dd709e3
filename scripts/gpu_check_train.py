#!/usr/bin/env python3
"""GPU check for the trainer at paper scale (issue 11, item 7): one RL update of a Qwen3-4B-shaped
random bf16 model on real MATH prompts, ours vs PyTorch eager, same shapes, same loss.

usage (on the GPU machine; Python with torch 2.11 CUDA + transformers + tokenizers, no network):
  python3 scripts/gpu_check_train.py --bin BIN --tokenizer tokenizer.json --math MATH_train.jsonl \\
      [--out results/gpu-train] [--batch 8] [--seq 1024] [--iters 3] [--warmup 1] [--device cuda]

  BIN   the release binary built with `make build-cuda`; run with LD_LIBRARY_PATH=<torch>/lib.

Steps (about 4-6 minutes on an H200):
 1. A random model with the real Qwen3-4B shape (scripts/make_qwen3_4b_random.py, bf16), unless
    --model names one.
 2. BATCH rollouts: the first BATCH MATH training problems in the paper's Qwen3 chat template,
    tokenized with the real Qwen3 tokenizer, each followed by random response tokens up to SEQ
    tokens in all; rewards alternate 1/0 (W-REINFORCE, λ = 0.1).
 3. Ours: `BIN bench-train --device cuda --dtype bf16 --gradient-checkpointing` (old log-probs by a
    no-grad forward, forward over response positions with the chunked LM head, clipped surrogate,
    backward through per-layer checkpointing, grad clip, AdamW on f32 master weights) — tokens/s and
    the CUDA caching allocator's peak allocated bytes (what torch.cuda.max_memory_allocated reads).
 4. PyTorch eager on the same model and rollouts, the same loss, gradient checkpointing
    (transformers' `gradient_checkpointing_enable`) and fused AdamW, two precision policies:
      bf16-params: bf16 parameters, bf16 AdamW state (the earlier anchor: 11,350 tok/s, 40 GB);
      f32-master:  f32 parameters and AdamW state, bf16 compute under autocast (our policy).
Writes OUT/gpu_train_check.json with the ratios (goal: ours ≥ 1.0× the tokens/s at ≤ 1.1× the memory).
"""
import argparse
import json
import os
import random
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."


def make_rollouts(path, tokenizer_path, math_path, batch, seq, vocab):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(tokenizer_path)
    rng = random.Random(0)
    problems = [json.loads(l)["problem"] for l, _ in zip(open(math_path), range(batch))]
    n_prompt = []
    with open(path, "w") as f:
        for i, p in enumerate(problems):
            text = f"<|im_start|>user\n{p} {INSTRUCTION}<|im_end|>\n<|im_start|>assistant\n"
            ids = tok.encode(text, add_special_tokens=False).ids[: seq // 2]
            resp = [rng.randrange(0, 151643) for _ in range(seq - len(ids))]
            n_prompt.append(len(ids))
            f.write(json.dumps({"group": f"g{i // 4}", "prompt_ids": ids, "response_ids": resp,
                                "reward": 1 - i % 2}) + "\n")
    return n_prompt


def torch_update(model_dir, rollouts_path, policy, iters, warmup, device):
    import torch
    from transformers import AutoModelForCausalLM

    dtype = torch.bfloat16 if policy == "bf16-params" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype, attn_implementation="sdpa").to(device)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.config.use_cache = False
    model.train()
    sys.path.insert(0, HERE)
    from bench_train import pack_rollouts, wreinforce_backward

    ids, mask, gather, targets, adv = pack_rollouts(rollouts_path)
    ids, mask, gather, targets, adv = (x.to(device) for x in (ids, mask, gather, targets, adv))
    n = len(targets)
    fused = device.startswith("cuda")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-6, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01, fused=fused)
    autocast = torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16, enabled=policy == "f32-master")

    def response_logits():
        with autocast:
            h = model.model(input_ids=ids, attention_mask=mask).last_hidden_state  # [B, T, C]
            h = h.reshape(-1, h.shape[-1])[gather]  # [N, C]: only response positions reach the head
            return model.lm_head(h)  # [N, V]

    times = []
    for i in range(warmup + iters):
        if i == warmup and fused:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        wreinforce_backward(response_logits, targets, adv, n)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if fused:
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        if i >= warmup:
            times.append(dt)
    tokens = int(mask.sum())
    mean = sum(times) / len(times)
    return {
        "impl": f"torch-eager {torch.__version__} ({policy}, gradient checkpointing, fused AdamW={fused})",
        "seconds_per_update": mean,
        "update_seconds": times,
        "tokens": tokens,
        "tokens_per_s": tokens / mean,
        "peak_allocated_bytes": torch.cuda.max_memory_allocated() if fused else None,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", required=True)
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--math", required=True, help="MATH train JSONL ({'problem': ...} per line)")
    ap.add_argument("--model", help="an existing HF model folder (default: a random Qwen3-4B, step 1)")
    ap.add_argument("--out", default="results/gpu-train")
    ap.add_argument("--work", default="/tmp/rlvr-qwen3-4b-random")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=1024)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--skip-torch", action="store_true")
    ap.add_argument("--policies", default="bf16-params,f32-master")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    model = a.model
    if model is None:
        model = a.work
        if not os.path.isfile(os.path.join(model, "config.json")):
            subprocess.run([sys.executable, os.path.join(HERE, "make_qwen3_4b_random.py"), model], check=True, timeout=300)
    vocab = json.load(open(os.path.join(model, "config.json")))["vocab_size"]
    rollouts = os.path.join(a.out, "rollouts.jsonl")
    n_prompt = make_rollouts(rollouts, a.tokenizer, a.math, a.batch, a.seq, vocab)
    print(f"rollouts: {a.batch} x {a.seq} tokens, prompts {min(n_prompt)}-{max(n_prompt)} tokens", flush=True)

    cmd = [a.bin, "bench-train", "--model", model, "--rollouts", rollouts, "--device", a.device,
           "--dtype", "bf16" if a.device.startswith("cuda") else "f32", "--gradient-checkpointing",
           "--iters", str(a.iters), "--warmup", str(a.warmup)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=400)
    if r.returncode != 0:
        sys.exit(f"ours failed: {r.stderr[-2000:]}")
    ours = json.loads(r.stdout)
    ours.pop("last", None)
    print(f"ours: {ours['tokens_per_s']:.0f} tok/s, peak {(ours.get('cuda_peak_allocated_bytes') or 0) / 1e9:.1f} GB",
          flush=True)
    res = {"what": "one RL update (W-REINFORCE) of a Qwen3-4B-shaped random model, gradient checkpointing",
           "batch": a.batch, "seq": a.seq, "ours": ours, "torch": {}}
    if not a.skip_torch:
        for policy in a.policies.split(","):
            code = ("import sys, json; sys.path.insert(0, %r); import gpu_check_train as g; "
                    "print(json.dumps(g.torch_update(*sys.argv[1:4], int(sys.argv[4]), int(sys.argv[5]), sys.argv[6])))" % HERE)
            t = subprocess.run([sys.executable, "-c", code, model, rollouts, policy, str(a.iters), str(a.warmup), a.device],
                               capture_output=True, text=True, timeout=400)
            if t.returncode != 0:
                res["torch"][policy] = {"error": t.stderr[-1500:]}
                print(f"torch {policy} failed: {t.stderr[-500:]}", flush=True)
                continue
            v = json.loads(t.stdout.strip().splitlines()[-1])
            v["ratio_tokens_per_s"] = ours["tokens_per_s"] / v["tokens_per_s"]
            if v["peak_allocated_bytes"] and ours.get("cuda_peak_allocated_bytes"):
                v["ratio_memory"] = ours["cuda_peak_allocated_bytes"] / v["peak_allocated_bytes"]
            res["torch"][policy] = v
            print(f"torch {policy}: {v['tokens_per_s']:.0f} tok/s, peak {(v['peak_allocated_bytes'] or 0) / 1e9:.1f} GB; "
                  f"ours/theirs tok/s {v['ratio_tokens_per_s']:.3f}, memory {v.get('ratio_memory', float('nan')):.3f}",
                  flush=True)
    with open(os.path.join(a.out, "gpu_train_check.json"), "w") as f:
        f.write(json.dumps(res, indent=2) + "\n")
    print(f"-> {os.path.join(a.out, 'gpu_train_check.json')}")


if __name__ == "__main__":
    main()
