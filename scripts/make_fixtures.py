#!/usr/bin/env python3
"""Build tiny random Qwen2 / Qwen3 / Llama checkpoints with transformers and record reference outputs.

Usage: .venv/bin/python scripts/make_fixtures.py [--out golden/fixtures] [--only qwen2|qwen3|llama|llama3]

Writes (all deterministic: seeded, f32, CPU, 1 thread):
  golden/fixtures/tiny-qwen2/   HF dir (config.json, model.safetensors, generation_config.json)
  golden/fixtures/tiny-qwen3/   HF dir
  golden/fixtures/tiny-llama/   HF dir (SmolLM2's shape of Llama: tied head, no biases)
  golden/fixtures/tiny-llama3/  HF dir (Llama 3.1's RoPE scaling, q/k/v/o biases, untied head)
  golden/fixtures/tiny-{qwen2,qwen3,llama,llama3}.json   reference logits + greedy continuations

Reference logits are recorded only at non-padding positions (padding positions are
undefined by construction). Positions are derived from the attention mask
(cumsum(mask) - 1), the same rule `generate` uses, so a left-padded row must give the
same logits as the unpadded row.
"""
import argparse
import json
import os
import sys

import torch
import transformers
from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config, Qwen3Config

COMMON = dict(
    vocab_size=512,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
    rms_norm_eps=1e-6,
    rope_theta=10000.0,
    bos_token_id=1,
    eos_token_id=2,
    pad_token_id=0,
)

# Fixed inputs. `single` is unpadded; `batch` is left-padded (pad id 0, mask 0).
SINGLE = [5, 17, 99, 230, 7, 411, 63, 12, 300, 8]
BATCH_ROWS = [
    [5, 17, 99, 230, 7, 411, 63, 12, 300, 8],
    [44, 45, 46, 500, 3, 77],
    [9, 250, 128],
]
N_NEW = 32


def left_pad(rows, pad=0):
    t = max(len(r) for r in rows)
    ids = [[pad] * (t - len(r)) + r for r in rows]
    mask = [[0] * (t - len(r)) + [1] * len(r) for r in rows]
    return ids, mask


def randomize(model, seed):
    """Non-trivial random weights: norms != 1, biases != 0, so every parameter matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            elif name.endswith(".bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            elif "embed_tokens" in name or "lm_head" in name:
                p.copy_(0.5 * torch.randn(p.shape, generator=g))
            else:
                # 2/sqrt(fan_in): large enough that greedy continuations are not degenerate repeats
                p.copy_(2.0 * torch.randn(p.shape, generator=g) / (p.shape[1] ** 0.5))


def positions_from_mask(mask):
    pos = mask.long().cumsum(-1) - 1
    return pos.masked_fill(mask == 0, 1)


def build(arch, out_dir, seed):
    if arch == "qwen2":
        cfg = Qwen2Config(**COMMON, tie_word_embeddings=False, use_sliding_window=False)
    elif arch == "qwen3":
        cfg = Qwen3Config(**COMMON, head_dim=16, attention_bias=False, tie_word_embeddings=True)
    elif arch == "llama":  # SmolLM2's shape of Llama: tied head, no biases
        cfg = LlamaConfig(**COMMON, attention_bias=False, mlp_bias=False, tie_word_embeddings=True)
    else:  # "llama3": Llama 3.1's RoPE scaling (every wavelength band hit at this size), biases, untied head
        common = {k: v for k, v in COMMON.items() if k != "rope_theta"}
        rope = {"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0, "low_freq_factor": 1.0,
                "high_freq_factor": 4.0, "original_max_position_embeddings": 64}
        cfg = LlamaConfig(**common, rope_parameters=rope, attention_bias=True, mlp_bias=False,
                          tie_word_embeddings=False)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32, attn_implementation="sdpa")
    randomize(model, seed)
    model.eval()
    name = f"tiny-{arch}"
    model_dir = os.path.join(out_dir, name)
    model.save_pretrained(model_dir)
    model.generation_config.save_pretrained(model_dir)

    rec = {
        "arch": arch,
        "model_dir": name,
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "note": "logits are [T_valid, V] per row, valid (mask=1) positions only, rounded to 7 significant digits",
    }
    with torch.no_grad():
        ids = torch.tensor([SINGLE])
        logits = model(input_ids=ids).logits[0]  # [T, V]
        rec["single"] = {
            "input_ids": SINGLE,
            "shape": list(logits.shape),
            "logits": [float(f"{x:.7g}") for x in logits.flatten().tolist()],
        }
        bids, bmask = left_pad(BATCH_ROWS)
        ids_t, mask_t = torch.tensor(bids), torch.tensor(bmask)
        out = model(input_ids=ids_t, attention_mask=mask_t, position_ids=positions_from_mask(mask_t)).logits
        rows = []
        for b, r in enumerate(BATCH_ROWS):
            lg = out[b, ids_t.shape[1] - len(r):]  # [T_valid, V]
            rows.append({"shape": list(lg.shape), "logits": [float(f"{x:.7g}") for x in lg.flatten().tolist()]})
        rec["batch"] = {"input_ids": bids, "attention_mask": bmask, "rows": rows}

        gen_kwargs = dict(max_new_tokens=N_NEW, min_new_tokens=N_NEW, do_sample=False,
                          eos_token_id=None, pad_token_id=0, use_cache=True)
        gen_kwargs.update(return_dict_in_generate=True, output_scores=True)
        o1 = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **gen_kwargs)
        ob = model.generate(input_ids=ids_t, attention_mask=mask_t, **gen_kwargs)
        g1, gb = o1.sequences, ob.sequences
        # smallest top1-top2 logit gap along the greedy paths (how fragile the token match is)
        margin = min(float((s.topk(2, dim=-1).values[:, 0] - s.topk(2, dim=-1).values[:, 1]).min())
                     for s in list(o1.scores) + list(ob.scores))
        rec["greedy"] = {
            "max_new_tokens": N_NEW,
            "min_top2_margin": margin,
            "single": g1[0, ids.shape[1]:].tolist(),
            "batch": [row[ids_t.shape[1]:].tolist() for row in gb],
        }
    with open(os.path.join(out_dir, f"{name}.json"), "w") as f:
        json.dump(rec, f, separators=(",", ":"))
    print(f"wrote {model_dir} and {name}.json", file=sys.stderr)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "golden", "fixtures"))
    ap.add_argument("--only", choices=["qwen2", "qwen3", "llama", "llama3"], help="build one fixture (the others stay as they are)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    os.makedirs(args.out, exist_ok=True)
    for arch, seed in [("qwen2", 1234), ("qwen3", 5678), ("llama", 4321), ("llama3", 8765)]:
        if args.only in (None, arch):
            build(arch, args.out, seed=seed)


if __name__ == "__main__":
    main()
