#!/usr/bin/env python3
"""Train-step benchmark: our tch Qwen model vs the same model in PyTorch eager (transformers).

Usage:
  .venv/bin/python scripts/bench_model.py --bin target/release/rlvr-decomp --out results/bench/model.json
      [--arch qwen2|qwen3] [--batch 8] [--seq 256] [--iters 10] [--warmup 2] [--threads N]
      [--device cpu|cuda] [--dtype f32|bf16] [--model-dir DIR] [--hidden 512 --layers 4 --vocab 8192 ...]

Creates (once, seeded) a mid-size random model as an HF directory (default
/tmp/rlvr-bench-model-<arch>-<shape>), then times one step = forward on random tokens
[batch, seq] + next-token cross-entropy in f32 + backward + zeroing grads (no optimizer) for:
  * tch:   `BIN bench-model --model DIR ...` (a separate process, same thread count),
  * torch: AutoModelForCausalLM.from_pretrained(DIR) in eager mode (sdpa attention, the
           transformers default; no torch.compile), same dtype, threads, shapes and step.
Writes JSON with both results and ratio = tch_seconds_per_step / torch_seconds_per_step
(goal <= 1.05). Both sides run `--rounds` times alternately; the best mean per side is used.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time


def make_model(path, args):
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config, Qwen3Config

    common = dict(
        vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=args.intermediate,
        num_hidden_layers=args.layers, num_attention_heads=args.heads,
        num_key_value_heads=args.kv_heads, max_position_embeddings=max(4096, args.seq),
        rms_norm_eps=1e-6, rope_theta=1e6, bos_token_id=1, eos_token_id=2, pad_token_id=0,
    )
    if args.arch == "qwen2":
        cfg = Qwen2Config(**common, tie_word_embeddings=False, use_sliding_window=False)
    else:
        cfg = Qwen3Config(**common, head_dim=args.hidden // args.heads, tie_word_embeddings=True)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    model.save_pretrained(path)


def torch_bench(args):
    import torch
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    dtype = {"f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16}[args.dtype]
    model = AutoModelForCausalLM.from_pretrained(args.model_dir, dtype=dtype, attn_implementation="sdpa").to(dev)
    model.train()  # dropout is 0 in Qwen configs; train() only matters for flags
    torch.manual_seed(0)
    ids = torch.randint(model.config.vocab_size, (args.batch, args.seq), device=dev)
    targets = ids[:, 1:].reshape(-1)
    params = [p for p in model.parameters() if p.requires_grad]
    sync = (lambda: torch.cuda.synchronize()) if dev.type == "cuda" else (lambda: None)
    times, loss_v = [], float("nan")
    for i in range(args.warmup + args.iters):
        sync()
        t0 = time.perf_counter()
        logits = model(input_ids=ids, use_cache=False).logits
        v = logits.shape[-1]
        loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, v).float(), targets)
        loss.backward()
        for p in params:
            if p.grad is not None:
                p.grad.zero_()
        sync()
        dt = time.perf_counter() - t0
        loss_v = loss.item()
        if i >= args.warmup:
            times.append(dt)
    mean = sum(times) / len(times)
    out = {
        "impl": "torch-eager (transformers %s, torch %s, attn=sdpa)" % (__import__("transformers").__version__, torch.__version__),
        "threads": torch.get_num_threads(),
        "seconds_per_step": mean,
        "step_seconds": times,
        "tokens_per_second": args.batch * args.seq / mean,
        "final_loss": loss_v,
    }
    if dev.type == "cuda":
        out["max_memory_allocated_bytes"] = torch.cuda.max_memory_allocated()
        out["max_memory_reserved_bytes"] = torch.cuda.max_memory_reserved()
    return out


def tch_bench(args):
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        out = f.name
    cmd = [args.bin, "bench-model", "--model", args.model_dir, "--batch", str(args.batch), "--seq", str(args.seq),
           "--iters", str(args.iters), "--warmup", str(args.warmup), "--threads", str(args.threads),
           "--device", args.device, "--dtype", args.dtype, "--out", out]
    env = dict(os.environ)
    try:
        import torch
        lib = os.path.join(os.path.dirname(torch.__file__), "lib")
        env["LD_LIBRARY_PATH"] = lib + (":" + env["LD_LIBRARY_PATH"] if env.get("LD_LIBRARY_PATH") else "")
    except ImportError:
        pass
    subprocess.run(cmd, check=True, env=env)
    with open(out) as f:
        res = json.load(f)
    os.unlink(out)
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default="target/release/rlvr-decomp")
    ap.add_argument("--out", default="results/bench/model.json")
    ap.add_argument("--model-dir", default=None)
    ap.add_argument("--arch", choices=["qwen2", "qwen3"], default="qwen2")
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--intermediate", type=int, default=1536)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="f32", choices=["f32", "bf16", "f16"])
    ap.add_argument("--torch-only", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.torch_only:  # child mode: one PyTorch measurement, JSON on stdout
        print(json.dumps(torch_bench(args)))
        return 0

    if args.model_dir is None:
        shape = f"h{args.hidden}-i{args.intermediate}-l{args.layers}-v{args.vocab}-kv{args.kv_heads}"
        args.model_dir = os.path.join(tempfile.gettempdir(), f"rlvr-bench-model-{args.arch}-{shape}")
    if not os.path.exists(os.path.join(args.model_dir, "config.json")):
        print(f"creating random model in {args.model_dir}", file=sys.stderr)
        make_model(args.model_dir, args)

    tch_runs, torch_runs = [], []
    for r in range(args.rounds):
        tch_runs.append(tch_bench(args))
        # PyTorch in a fresh process too, so neither side inherits the other's allocator state
        child = subprocess.run([sys.executable, __file__, "--torch-only", "--model-dir", args.model_dir,
                                "--batch", str(args.batch), "--seq", str(args.seq), "--iters", str(args.iters),
                                "--warmup", str(args.warmup), "--threads", str(args.threads),
                                "--device", args.device, "--dtype", args.dtype],
                               check=True, capture_output=True, text=True)
        torch_runs.append(json.loads(child.stdout.strip().splitlines()[-1]))
        print(f"round {r}: tch {tch_runs[-1]['seconds_per_step']:.4f} s/step, "
              f"torch {torch_runs[-1]['seconds_per_step']:.4f} s/step", file=sys.stderr)
    best_tch = min(tch_runs, key=lambda x: x["seconds_per_step"])
    best_torch = min(torch_runs, key=lambda x: x["seconds_per_step"])
    ratio = best_tch["seconds_per_step"] / best_torch["seconds_per_step"]
    with open(os.path.join(args.model_dir, "config.json")) as f:
        cfg = json.load(f)
    result = {
        "benchmark": "train step (forward + f32 cross-entropy + backward + zero grads), no optimizer",
        "model_dir": args.model_dir,
        "model": {k: cfg.get(k) for k in ("architectures", "hidden_size", "intermediate_size", "num_hidden_layers",
                                          "num_attention_heads", "num_key_value_heads", "vocab_size",
                                          "tie_word_embeddings")},
        "batch": args.batch, "seq": args.seq, "iters": args.iters, "warmup": args.warmup,
        "rounds": args.rounds, "threads": args.threads, "device": args.device, "dtype": args.dtype,
        "tch": best_tch, "torch": best_torch,
        "tch_rounds_s": [x["seconds_per_step"] for x in tch_runs],
        "torch_rounds_s": [x["seconds_per_step"] for x in torch_runs],
        "ratio_tch_over_torch": ratio,
        "goal_ratio": 1.05,
        "meets_goal": ratio <= 1.05,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(json.dumps({"ratio_tch_over_torch": ratio, "tch_s": best_tch["seconds_per_step"],
                      "torch_s": best_torch["seconds_per_step"], "out": args.out}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
