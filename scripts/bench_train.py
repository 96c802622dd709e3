#!/usr/bin/env python3
"""RL update benchmark: our tch trainer's update vs the same loss written in PyTorch eager.

Usage:
  .venv/bin/python scripts/bench_train.py --bin target/release/rlvr-decomp --out results/bench/train.json
      [--rollouts 16] [--prompt 64] [--response 192] [--iters 5] [--warmup 1] [--rounds 2] [--threads 2]
      [--hidden 512 --layers 4 --vocab 32768 ...] [--memory-only]
  `--memory-only` (`make bench-memory`, with --layers 8 --response 448 where activations dominate):
  only the gradient-checkpointing comparison and the memory plan check, no PyTorch side.

Creates (once, seeded) a random Qwen2 model as an HF folder and a fixed rollout batch (random
prompt/response token ids, rewards alternating 1/0), then times one update on it, the work of one
mini-batch of `train` with W-REINFORCE (λ 0.1, clip 0.2, entropy 1e-4, AdamW lr 1e-6, wd 0.01,
grad clip 1.0), f32, same threads:
  * tch:   `BIN bench-train --model DIR --rollouts FILE` (old log-probs by a no-grad forward, then
           forward over response positions with a chunked LM head, loss, backward, clip, AdamW);
  * torch: transformers' model in eager mode, written as verl writes it (old log-probs by a no-grad
           forward; full [B, T, V] logits sliced to the response positions, log-softmax, entropy,
           clipped surrogate, token-mean, backward, clip_grad_norm_, torch.optim.AdamW).
Both sides run `--rounds` times alternately; the best mean per side is used.
Writes JSON with both and ratio = tch seconds / torch seconds (goal <= 1.05).
"""
import argparse
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time


def make_model(path, a):
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config

    cfg = Qwen2Config(
        vocab_size=a.vocab, hidden_size=a.hidden, intermediate_size=a.intermediate, num_hidden_layers=a.layers,
        num_attention_heads=a.heads, num_key_value_heads=a.kv_heads, max_position_embeddings=4096,
        rms_norm_eps=1e-6, rope_theta=1e6, bos_token_id=1, eos_token_id=2, pad_token_id=0,
        tie_word_embeddings=False, use_sliding_window=False,
    )
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(cfg, dtype=torch.float32).save_pretrained(path)


def make_rollouts(path, a):
    rng = random.Random(0)
    with open(path, "w") as f:
        for i in range(a.rollouts):
            p = [rng.randrange(3, a.vocab) for _ in range(a.prompt)]
            # responses of varied length, as a real batch has
            n = max(8, a.response - rng.randrange(0, a.response // 2))
            r = [rng.randrange(3, a.vocab) for _ in range(n)]
            f.write(json.dumps({"group": f"g{i // 4}", "prompt_ids": p, "response_ids": r, "reward": i % 2}) + "\n")


def pack_rollouts(rollouts_path):
    """A rollouts JSONL as right-padded tensors: ids, mask [B, T]; gather [N] (flat index of the
    hidden state predicting each response token), targets [N], W-REINFORCE advantages [N] (λ 0.1)."""
    import torch

    rows = [json.loads(l) for l in open(rollouts_path)]
    t = max(len(r["prompt_ids"]) + len(r["response_ids"]) for r in rows)
    ids = torch.zeros(len(rows), t, dtype=torch.long)
    mask = torch.zeros(len(rows), t, dtype=torch.long)
    gather, targets, adv = [], [], []
    for i, r in enumerate(rows):
        seq = r["prompt_ids"] + r["response_ids"]
        ids[i, : len(seq)] = torch.tensor(seq)
        mask[i, : len(seq)] = 1
        p = len(r["prompt_ids"])
        gather += [i * t + p + j - 1 for j in range(len(r["response_ids"]))]
        targets += r["response_ids"]
        adv += [0.1 if r["reward"] == 1 else -1.0] * len(r["response_ids"])
    return ids, mask, torch.tensor(gather), torch.tensor(targets), torch.tensor(adv)


def wreinforce_backward(response_logits, targets, adv, n):
    """The update's loss, as verl writes it, and its backward: old log-probs by a no-grad forward,
    log-softmax over the response logits, clipped surrogate (ε 0.2), entropy bonus 1e-4, token-mean."""
    import torch

    with torch.no_grad():
        old = torch.log_softmax(response_logits().float(), -1).gather(-1, targets[:, None]).squeeze(-1)
    lp_all = torch.log_softmax(response_logits().float(), -1)
    logp = lp_all.gather(-1, targets[:, None]).squeeze(-1)
    ent = -(lp_all.exp() * lp_all).sum(-1)
    ratio = torch.exp(logp - old)
    pg = torch.maximum(-adv * ratio, -adv * torch.clamp(ratio, 0.8, 1.2))
    loss = pg.sum() / n - 1e-4 * ent.sum() / n
    loss.backward()


def torch_bench(a, model_dir, rollouts_path):
    import torch
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(a.threads)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="sdpa")
    model.train()
    ids, mask, gather, targets, adv = pack_rollouts(rollouts_path)
    n = len(targets)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-6, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)

    def response_logits():
        logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits  # [B, T, V]
        return logits.reshape(-1, logits.shape[-1])[gather]  # [N, V]

    times = []
    for i in range(a.warmup + a.iters):
        t0 = time.perf_counter()
        wreinforce_backward(response_logits, targets, adv, n)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=False)
        dt = time.perf_counter() - t0
        if i >= a.warmup:
            times.append(dt)
    return {
        "impl": "torch-eager (transformers %s, torch %s, attn=sdpa)"
        % (__import__("transformers").__version__, torch.__version__),
        "threads": torch.get_num_threads(),
        "seconds_per_update": sum(times) / len(times),
        "update_seconds": times,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default="target/release/rlvr-decomp")
    ap.add_argument("--out", default="results/bench/train.json")
    ap.add_argument("--rollouts", type=int, default=16)
    ap.add_argument("--prompt", type=int, default=64)
    ap.add_argument("--response", type=int, default=192)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--intermediate", type=int, default=1408)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--vocab", type=int, default=32768)
    ap.add_argument("--torch-only", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--memory-only", action="store_true")
    a = ap.parse_args()

    work = tempfile.mkdtemp(prefix="rlvr-bench-train-")
    model_dir = os.path.join(work, "model")
    rollouts = os.path.join(work, "rollouts.jsonl")
    make_model(model_dir, a)
    make_rollouts(rollouts, a)
    best = {"tch": None, "torch": None}
    runs = {"tch": [], "torch": []}
    for r in range(0 if a.memory_only else a.rounds):
        cmd = [a.bin, "bench-train", "--model", model_dir, "--rollouts", rollouts, "--iters", str(a.iters),
               "--warmup", str(a.warmup), "--threads", str(a.threads)]
        ours = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
        # PyTorch in a fresh process too, so neither side inherits the other's warm allocator.
        code = ("import json,sys; sys.path.insert(0, %r); import bench_train as b, argparse; "
                "a = argparse.Namespace(**json.loads(sys.argv[1])); print(json.dumps(b.torch_bench(a, sys.argv[2], sys.argv[3])))"
                % os.path.dirname(os.path.abspath(__file__)))
        theirs = json.loads(subprocess.run([sys.executable, "-c", code, json.dumps(vars(a)), model_dir, rollouts],
                                           check=True, capture_output=True, text=True).stdout)
        for k, v in (("tch", ours), ("torch", theirs)):
            runs[k].append(v["seconds_per_update"])
            if best[k] is None or v["seconds_per_update"] < best[k]["seconds_per_update"]:
                best[k] = v
        print(f"round {r + 1}: tch {ours['seconds_per_update']:.3f} s, torch {theirs['seconds_per_update']:.3f} s", flush=True)
    # Gradient checkpointing: the same update with each layer recomputed in the backward pass.
    # One update per fresh process (no warm-up), so the peak resident memory is that update's own
    # (glibc keeps freed arenas across iterations); the memory plan of `train --dry-run` for the
    # same shapes beside it (measured = peak - RSS before the model was loaded).
    ckpt = {}
    for dtype in ("f32", "bf16"):
        for on in (False, True):
            cmd = [a.bin, "bench-train", "--model", model_dir, "--rollouts", rollouts, "--iters", "1",
                   "--warmup", "0", "--threads", str(a.threads), "--dtype", dtype] + (["--gradient-checkpointing"] if on else [])
            # A fixed mmap threshold turns off glibc's dynamic one, which otherwise lets freed large
            # blocks stay in the heap and makes the peak RSS of the same run vary by ~15%.
            env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072")
            v = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout)
            key = f"{dtype}_{'on' if on else 'off'}"
            ckpt[key] = {k: v[k] for k in ("seconds_per_update", "peak_rss_bytes", "start_rss_bytes", "plan_bytes",
                                           "measured_over_plan")}
            print(f"{dtype} checkpointing {'on ' if on else 'off'}: {v['seconds_per_update']:.2f} s, peak RSS "
                  f"{v['peak_rss_bytes'] / 1e6:.0f} MB, measured/plan {v['measured_over_plan']:.3f}", flush=True)
        ckpt[f"{dtype}_time_ratio_on_off"] = ckpt[f"{dtype}_on"]["seconds_per_update"] / ckpt[f"{dtype}_off"]["seconds_per_update"]
        ckpt[f"{dtype}_peak_rss_ratio_on_off"] = ckpt[f"{dtype}_on"]["peak_rss_bytes"] / ckpt[f"{dtype}_off"]["peak_rss_bytes"]
    res = {
        "what": "one RL update (old log-probs + forward + W-REINFORCE loss + backward + AdamW) on a fixed rollout batch",
        "model": {"arch": "Qwen2ForCausalLM (random)", "hidden": a.hidden, "intermediate": a.intermediate,
                  "layers": a.layers, "heads": a.heads, "kv_heads": a.kv_heads, "vocab": a.vocab},
        "rollouts": {"n": a.rollouts, "prompt": a.prompt, "response_max": a.response},
        "threads": a.threads, "iters": a.iters, "rounds": a.rounds,
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()},
        "tch": best["tch"], "torch": best["torch"], "round_means": runs,
        "ratio": None if a.memory_only else best["tch"]["seconds_per_update"] / best["torch"]["seconds_per_update"],
        "gradient_checkpointing": ckpt,
    }
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, "w") as f:
        f.write(json.dumps(res, indent=2) + "\n")
    if res["ratio"] is not None:
        print(f"ratio tch/torch = {res['ratio']:.3f}")
    print(f"-> {a.out}")


if __name__ == "__main__":
    main()
