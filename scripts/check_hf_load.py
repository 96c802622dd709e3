#!/usr/bin/env python3
"""Check that transformers loads a checkpoint written by rlvr-decomp, unchanged.

Usage:
  .venv/bin/python scripts/check_hf_load.py DIR --expect FILE [--tol 1e-4]

FILE is JSON {"input_ids": [[...], ...], "logits": [...flat B*T*V...], "shape": [B, T, V]}
(all rows unpadded, same length) produced by our model on the same weights. The script loads
DIR with AutoModelForCausalLM.from_pretrained (no conversion, strict: any missing or
unexpected weight is an error), runs the same ids, and exits 0 iff max |logit diff| <= tol.
Prints one JSON line {"ok", "max_abs_diff", "arch", "dtype", ...}.
"""
import argparse
import json
import sys


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--expect", required=True)
    ap.add_argument("--tol", type=float, default=1e-4)
    args = ap.parse_args()

    import torch
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(1)
    model, info = AutoModelForCausalLM.from_pretrained(args.dir, dtype="auto", output_loading_info=True)
    bad = {k: v for k, v in info.items() if v and k in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs")}
    if bad:
        print(json.dumps({"ok": False, "error": f"loading info not clean: {bad}"}))
        return 1
    model.eval()
    with open(args.expect) as f:
        exp = json.load(f)
    ids = torch.tensor(exp["input_ids"], dtype=torch.long)
    want = torch.tensor(exp["logits"], dtype=torch.float32).view(*exp["shape"])
    with torch.no_grad():
        got = model(input_ids=ids).logits.float()
    if list(got.shape) != list(want.shape):
        print(json.dumps({"ok": False, "error": f"shape {list(got.shape)} vs expected {list(want.shape)}"}))
        return 1
    diff = (got - want).abs().max().item()
    ok = diff <= args.tol
    print(json.dumps({
        "ok": ok,
        "max_abs_diff": diff,
        "tol": args.tol,
        "arch": model.config.architectures,
        "dtype": str(next(model.parameters()).dtype),
        "tied": bool(model.config.tie_word_embeddings),
    }))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
